"""Virus scanning with ClamAV's ``clamd`` over its socket protocol (clamd(8),
"INSTREAM"), on a unix socket or TCP.

The raw message is streamed as it was received: clamd takes MIME apart
itself, undoes base64 and quoted-printable, opens archives and nested
``message/rfc822`` parts (tests/filters/test_clamav.py proves each against a
real clamd). A message larger than what clamd accepts in one stream
(``StreamMaxLength``) is scanned part by part instead, each attachment
decoded; a part larger still cannot be scanned and is quarantined, since
mail is never delivered unscanned.

clamd down, refusing, or slower than the timeout: ``FilterUnavailable``,
and the mail waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Iterator

from mailfleet.config import ClamdAddress
from mailfleet.filters import FilterResult, FilterUnavailable, MailToCheck, Reason, Verdict
from mailfleet.proto.mime import parse_message

CHUNK = 64 * 1024
# Nested messages looked into when a mail is scanned part by part.
MAX_DEPTH = 5


class _StreamTooLong(Exception):
    """clamd refused the stream as over its StreamMaxLength."""


class ClamdScanner:
    """One INSTREAM conversation per scan (clamd serves each connection on a
    thread of its own; sessions would only save the connect)."""

    def __init__(
        self,
        address: ClamdAddress,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_stream: int = 25 * 1024 * 1024,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_stream = max_stream

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.address.path:
                    return await asyncio.open_unix_connection(self.address.path)
                return await asyncio.open_connection(self.address.host, self.address.port)
        except TimeoutError:
            raise FilterUnavailable(f"clamd at {self.address}: no connection in time") from None
        except OSError as exc:
            raise FilterUnavailable(f"clamd at {self.address}: {exc.strerror or exc}") from None

    async def ping(self) -> None:
        """Raises FilterUnavailable unless clamd answers PONG."""
        reply = await self._talk(lambda writer: writer.write(b"zPING\0"))
        if reply != "PONG":
            raise FilterUnavailable(f"clamd at {self.address} answered {reply!r} to PING")

    async def scan(self, data: bytes) -> str | None:
        """The name of the signature ``data`` matches, or None when clean.
        Raises ``_StreamTooLong`` over the stream limit (ours or clamd's)."""
        if len(data) > self.max_stream:
            raise _StreamTooLong

        def send(writer: asyncio.StreamWriter) -> None:
            writer.write(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                chunk = view[start : start + CHUNK]
                writer.write(struct.pack(">I", len(chunk)))
                writer.write(chunk)
            writer.write(b"\0\0\0\0")

        reply = await self._talk(send)
        if reply.endswith(" FOUND"):
            # "stream: Eicar-Signature FOUND"
            return reply.removeprefix("stream:").removesuffix(" FOUND").strip()
        if reply.endswith("OK"):
            return None
        if "size limit exceeded" in reply:
            raise _StreamTooLong
        raise FilterUnavailable(f"clamd at {self.address} answered {reply!r}")

    async def _talk(self, send: Callable[[asyncio.StreamWriter], None]) -> str:
        reader, writer = await self._connect()
        try:
            async with asyncio.timeout(self.timeout):
                send(writer)
                with contextlib.suppress(ConnectionError):
                    # clamd stops reading and answers when the stream is over
                    # its limit: the answer is still there to read.
                    await writer.drain()
                reply = await reader.readuntil(b"\0")
        except TimeoutError:
            raise FilterUnavailable(
                f"clamd at {self.address}: no answer within {self.timeout:g} s"
            ) from None
        except asyncio.IncompleteReadError as exc:
            raise FilterUnavailable(
                f"clamd at {self.address} closed the connection"
                + (f" after {exc.partial[:200]!r}" if exc.partial else "")
            ) from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            raise FilterUnavailable(f"clamd at {self.address}: {exc}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return reply.rstrip(b"\0").decode("utf-8", "replace").strip()


def _parts(raw: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """(name, decoded bytes) of what a message carries, for scanning it piece
    by piece: the text and HTML bodies, each attachment, and those of nested
    messages."""
    parsed = parse_message(raw)
    yield "body", parsed.text.encode()
    if parsed.html_source is not None:
        yield "html", parsed.html_source.encode()
    for attachment in parsed.attachments:
        yield attachment.filename, attachment.data
        if attachment.content_type == "message/rfc822" and depth < MAX_DEPTH:
            yield from _parts(attachment.data, depth + 1)


class ClamAV:
    """The filter: a signature found means QUARANTINE, reason ``VIRUS``."""

    name = "clamav"

    def __init__(self, scanner: ClamdScanner) -> None:
        self.scanner = scanner

    async def check(self, mail: MailToCheck) -> FilterResult:
        try:
            found = await self.scanner.scan(mail.raw)
        except _StreamTooLong:
            return await self._check_parts(mail.raw)
        return _result(found)

    async def _check_parts(self, raw: bytes) -> FilterResult:
        parts = await asyncio.to_thread(lambda: list(_parts(raw)))
        for name, data in parts:
            try:
                found = await self.scanner.scan(data)
            except _StreamTooLong:
                return FilterResult(
                    reasons=(
                        Reason(
                            "VIRUS_SCAN_INCOMPLETE",
                            0.0,
                            f"{name} ({len(data)} bytes) is over what the scanner takes",
                        ),
                    ),
                    verdict=Verdict.QUARANTINE,
                )
            if found:
                return _result(found)
        return FilterResult()


def _result(found: str | None) -> FilterResult:
    if found is None:
        return FilterResult()
    return FilterResult(reasons=(Reason("VIRUS", 0.0, found),), verdict=Verdict.QUARANTINE)
