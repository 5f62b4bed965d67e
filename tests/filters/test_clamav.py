"""The clamd filter against a real clamd (tests/support/clamd.py) started by
the tests with their own signatures, over its unix socket and TCP: what it
finds in raw mail (attachments, zips, nested messages), and how it answers
when clamd is absent, silent or refuses the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailfleet.config import ClamdAddress
from mailfleet.filters import FilterResult, FilterUnavailable, MailToCheck, Verdict
from mailfleet.filters.clamav import ClamAV, ClamdScanner
from mailfleet.proto.mime import parse_message
from tests.support.clamd import (
    CUSTOM_MARKER,
    CUSTOM_NAME,
    EICAR,
    EICAR_NAME,
    Clamd,
    free_port,
    zipped,
)


def message(
    attachments: tuple[tuple[str, bytes, str], ...] = (), body: str = "Hello.\n"
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "ann@example.org"
    mail["To"] = "bob@example.com"
    mail["Subject"] = "Files"
    mail.set_content(body)
    for filename, data, content_type in attachments:
        maintype, _, subtype = content_type.partition("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mail


def forwarded(inner: EmailMessage) -> bytes:
    outer = message(body="Forwarding this.\n")
    outer.add_attachment(inner)  # message/rfc822
    return outer.as_bytes()


def checked(raw: bytes) -> MailToCheck:
    return MailToCheck(
        raw=raw,
        parsed_message=parse_message(raw),
        mail_from="ann@example.org",
        recipients=("bob@example.com",),
        direction="in",
    )


def scanner(url: str, **options: float) -> ClamAV:
    return ClamAV(ClamdScanner(ClamdAddress.parse(url), **options))  # type: ignore[arg-type]


def found(result: FilterResult) -> list[tuple[str, str]]:
    return [(r.name, r.detail) for r in result.reasons]


EICAR_ATTACHED = message((("eicar.com.txt", EICAR, "application/octet-stream"),)).as_bytes()
EICAR_ZIPPED = message((("report.zip", zipped("eicar.com", EICAR), "application/zip"),)).as_bytes()
EICAR_NESTED = forwarded(message((("eicar.txt", EICAR, "application/octet-stream"),)))
CLEAN_PDF = message((("minutes.pdf", b"%PDF-1.7\n%clean\n", "application/pdf"),)).as_bytes()


@pytest.mark.parametrize(
    "raw",
    [EICAR_ATTACHED, EICAR_ZIPPED, EICAR_NESTED],
    ids=["attachment", "zip", "nested-rfc822"],
)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_eicar_is_found_in_the_raw_mail(clamd: Clamd, raw: bytes, transport: str) -> None:
    # Encoded every time: clamd undoes base64 and zip itself.
    assert EICAR not in raw
    url = clamd.unix_url if transport == "unix" else clamd.tcp_url
    result = await scanner(url).check(checked(raw))
    assert result.verdict == Verdict.QUARANTINE
    assert found(result) == [("VIRUS", EICAR_NAME)]


async def test_the_custom_signature_is_found_and_clean_mail_passes(clamd: Clamd) -> None:
    custom = message((("notes.txt", CUSTOM_MARKER, "text/plain"),)).as_bytes()
    result = await scanner(clamd.unix_url).check(checked(custom))
    assert (result.verdict, found(result)) == (Verdict.QUARANTINE, [("VIRUS", CUSTOM_NAME)])
    clean = await scanner(clamd.unix_url).check(checked(CLEAN_PDF))
    assert clean == FilterResult()


async def test_a_mail_over_the_stream_limit_is_scanned_part_by_part(clamd: Clamd) -> None:
    padding = ("lorem ipsum " * 2000).encode()
    big = message(
        (
            ("a.txt", padding, "text/plain"),
            ("b.bin", zipped("x.com", EICAR), "application/zip"),
        )
    ).as_bytes()
    small_limit = len(big) - 1  # the whole mail is too long, each part is not
    result = await scanner(clamd.unix_url, max_stream=small_limit).check(checked(big))
    assert found(result) == [("VIRUS", EICAR_NAME)]

    nested = forwarded(message((("eicar.txt", EICAR, "application/octet-stream"),)))
    result = await scanner(clamd.unix_url, max_stream=len(nested) - 1).check(checked(nested))
    assert found(result) == [("VIRUS", EICAR_NAME)]

    clean = message((("a.txt", padding, "text/plain"),)).as_bytes()
    result = await scanner(clamd.unix_url, max_stream=len(clean) - 1).check(checked(clean))
    assert result == FilterResult()


async def test_a_part_too_long_to_scan_is_quarantined_not_delivered(clamd: Clamd) -> None:
    raw = message((("huge.bin", b"\0" * 50_000, "application/octet-stream"),)).as_bytes()
    result = await scanner(clamd.unix_url, max_stream=10_000).check(checked(raw))
    assert result.verdict == Verdict.QUARANTINE
    assert [r.name for r in result.reasons] == ["VIRUS_SCAN_INCOMPLETE"]
    assert "huge.bin (50000 bytes)" in result.reasons[0].detail


# -- clamd absent, silent or refusing --------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_clamd(tmp_path: Path) -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        path = tmp_path / f"fake{len(servers)}.sock"
        servers.append(await asyncio.start_unix_server(handler, path=str(path)))
        return f"unix:{path}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_clamd_down_makes_the_mail_wait(tmp_path: Path) -> None:
    with pytest.raises(FilterUnavailable, match="clamd at unix:"):
        await scanner(f"unix:{tmp_path}/none.sock").check(checked(CLEAN_PDF))
    port = free_port()  # nothing listens there
    with pytest.raises(FilterUnavailable, match=f"clamd at tcp://127.0.0.1:{port}"):
        await scanner(f"tcp://127.0.0.1:{port}").check(checked(CLEAN_PDF))


async def test_clamd_silent_or_hanging_up_makes_the_mail_wait(
    fake_clamd: Callable[[Handler], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)
        writer.close()

    started = asyncio.get_running_loop().time()
    with pytest.raises(FilterUnavailable, match=r"no answer within 0\.3 s"):
        await scanner(await fake_clamd(silent), timeout=0.3).check(checked(CLEAN_PDF))
    assert asyncio.get_running_loop().time() - started < 2
    with pytest.raises(FilterUnavailable, match="closed the connection"):
        await scanner(await fake_clamd(hangs_up)).check(checked(CLEAN_PDF))


async def test_clamd_refusing_the_stream_length_falls_back_to_parts(
    fake_clamd: Callable[[Handler], Awaitable[str]],
) -> None:
    """clamd's own StreamMaxLength below ours: it answers so and hangs up;
    each part is then sent alone, and each part's answer counts."""
    whole = len(EICAR_ATTACHED)
    seen: list[int] = []

    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(10) == b"zINSTREAM\0"
        size = 0
        while chunk := int.from_bytes(await reader.readexactly(4), "big"):
            size += len(await reader.readexactly(chunk))
        seen.append(size)
        if size == whole:
            writer.write(b"INSTREAM size limit exceeded. ERROR\0")
        else:  # parts arrive decoded: the attachment is told by its size
            writer.write(b"stream: Fake.Sig FOUND\0" if size == len(EICAR) else b"stream: OK\0")
        await writer.drain()
        writer.close()

    result = await scanner(await fake_clamd(limited)).check(checked(EICAR_ATTACHED))
    assert found(result) == [("VIRUS", "Fake.Sig")]
    assert seen[0] == whole and len(EICAR) in seen[1:]
