"""Our buffered DATA reader (smtp/server.py) answers exactly as aiosmtpd's
line-by-line one for CRLF mail: the same replies and the same stored bytes
for the same client bytes, however the bytes are split into TCP segments,
including commands pipelined after the final dot. Where it differs on
purpose (bare LF and CR become CRLF, decision 0025) the bytes it stores are
pinned here too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from mailfleet.ratelimit import RateLimiter
from mailfleet.smtp.server import _ENHANCED, ConnectionLimits, MailfleetSMTP
from mailfleet.storage.embedded.memory import MemoryCache

SIZE_LIMIT = 3000


class Capture:
    def __init__(self) -> None:
        self.mails: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope.original_content)
        return f"250 OK {len(self.mails)}"


async def _serve(factory: Any) -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _session(port: int, segments: list[bytes]) -> list[str]:
    """Sends ``segments`` one write each (a short pause between them), then
    QUIT; returns every reply line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for segment in segments:
        writer.write(segment)
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    replies = (await asyncio.wait_for(reader.read(), 10)).decode().split("\r\n")
    writer.close()
    return [line for line in replies if line]


def _normalize(replies: list[str]) -> list[str]:
    # aiosmtpd's own replies gain enhanced codes in ours; greeting and EHLO differ in name.
    return [_ENHANCED.get(r, r) for r in replies if not r.startswith(("220", "250-"))]


ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n"
LONG = b"z" * 997
CASES = {
    "empty": [ENVELOPE, b".\r\n"],
    "one line": [ENVELOPE, b"Subject: hi\r\n\r\nbody\r\n.\r\n"],
    "dots": [ENVELOPE, b"..leading\r\n..\r\nmid.dle\r\n...\r\n\r\n.\r\n"],
    "first line a dot": [ENVELOPE, b"..\r\nx\r\n.\r\n"],
    "split terminator": [ENVELOPE, b"a\r\nb\r", b"\n.", b"\r", b"\n"],
    "split at line start": [ENVELOPE, b"a\r\n", b".\r\n"],
    "line of 999": [ENVELOPE, b"a" * 999 + b"\r\n.\r\n"],
    "line of 1000": [ENVELOPE, b"a" * 1000 + b"\r\n.\r\n"],
    "line of 1002 in parts": [ENVELOPE, b"a" * 700, b"a" * 302 + b"\r\n.\r\n"],
    "size at the limit": [ENVELOPE, (LONG + b"\r\n") * 3 + b".\r\n"],
    "size at the limit, to the byte": [ENVELOPE, (LONG + b"\r\n") * 3 + b"q\r\n.\r\n"],
    "size one over": [ENVELOPE, (LONG + b"\r\n") * 3 + b"qq\r\n.\r\n"],
    "far over, then more mail": [
        ENVELOPE,
        (LONG + b"\r\n") * 40 + b".\r\n" + ENVELOPE[16:] + b"after\r\n.\r\n",
    ],
    "100 KB over, in parts": [ENVELOPE, *[(LONG + b"\r\n") * 10] * 10, b".\r\nNOOP\r\n"],
    "long line then over": [ENVELOPE, b"b" * 1500 + b"\r\n" + (LONG + b"\r\n") * 5 + b".\r\n"],
    "over then long line": [ENVELOPE, (LONG + b"\r\n") * 4 + b"b" * 1500 + b"\r\n.\r\n"],
    "pipelined next mail": [
        ENVELOPE,
        b"first\r\n.\r\nMAIL FROM:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n",
        b"second\r\n..\r\n.\r\nRSET\r\nNOOP\r\n",
    ],
    "all in one segment": [ENVELOPE + b"x\r\n.\r\nNOOP\r\n"],
    "no recipient": [b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n"],
    "argument": [b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA x\r\n"],
}


@pytest.mark.parametrize("case", CASES)
async def test_same_replies_and_bytes_as_aiosmtpd(case: str) -> None:
    segments = CASES[case]
    theirs, ours = Capture(), Capture()
    limits = ConnectionLimits(RateLimiter(MemoryCache()), 100, 10_000)
    async for their_port in _serve(lambda: SMTP(theirs, data_size_limit=SIZE_LIMIT)):
        their_replies = await _session(their_port, segments)
    async for our_port in _serve(
        lambda: MailfleetSMTP(ours, limits=limits, data_size_limit=SIZE_LIMIT)
    ):
        our_replies = await _session(our_port, segments)
    assert _normalize(our_replies) == _normalize(their_replies)
    assert ours.mails == theirs.mails
    assert our_replies[-1].startswith("221")


BARE_LINE_ENDS = {
    # aiosmtpd stores these bytes as they came: b"a\nb\rc\r\n.x\n.\r\n".
    "LF and CR in a line": (b"a\nb\rc\r\n.x\n.\r\n.\r\n", b"a\r\nb\r\nc\r\nx\r\n\r\n"),
    # LF.CRLF is no end of data: only CRLF.CRLF is.
    "only LF": (
        b"Subject: s\n\nline\n..dot\n.\r\nstill body\r\n.\r\n",
        b"Subject: s\r\n\r\nline\r\n.dot\r\n\r\nstill body\r\n",
    ),
    "CR LF split over segments": (b"a\r", b"a\r\n"),
}


@pytest.mark.parametrize("case", BARE_LINE_ENDS)
async def test_bare_line_ends_are_stored_as_crlf(case: str) -> None:
    sent, stored = BARE_LINE_ENDS[case]
    segments = [ENVELOPE, sent]
    if case == "CR LF split over segments":
        segments.append(b"\n.\r\n")
    ours = Capture()
    limits = ConnectionLimits(RateLimiter(MemoryCache()), 100, 10_000)
    async for port in _serve(lambda: MailfleetSMTP(ours, limits=limits)):
        replies = await _session(port, segments)
    assert "250 OK 1" in replies
    assert ours.mails == [stored]
