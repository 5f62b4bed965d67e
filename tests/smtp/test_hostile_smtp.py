"""The MX and submission ports against clients that break the rules on
purpose: SMTP smuggling, bare line feeds, huge header sections, clients that
dribble or idle (decision 0025). Raw sockets for what no real client library
will send; mail checked through the HTTP API as its recipient sees it."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from mailfleet.delivery.incoming import Envelope
from tests.conftest import PASSWORD, Service, StartService, User
from tests.support.memory import PeakMemory

SENDER = "sender@outside.example"


class RawClient:
    """An SMTP client that writes exactly the bytes it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 20
        )
        return cls(reader, writer)

    async def reply(self, timeout: float = 10) -> str:
        """One whole reply (every line of a multi-line one); its last line."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("the server closed the connection")
            text = line.decode().rstrip("\r\n")
            if text[3:4] != "-":
                return text

    async def command(self, line: str, timeout: float = 10) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply(timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_in_pieces(self, data: bytes, piece: int = 65536) -> None:
        """Written piece by piece, so that the client never holds a second
        copy of a big message in its transport buffer."""
        for start in range(0, len(data), piece):
            self.writer.write(data[start : start + piece])
            await self.writer.drain()

    async def rest(self, timeout: float = 10) -> list[str]:
        """Every reply line until the server hangs up."""
        data = await asyncio.wait_for(self.reader.read(), timeout)
        return [line for line in data.decode().split("\r\n") if line]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def service(start_service: StartService) -> Service:
    # AUTH in clear on loopback: the raw client speaks no TLS.
    return await start_service({"smtp": {"insecure_auth_on_loopback": True}})


def _port(service: Service, door: str) -> int:
    return service.smtp_port if door == "mx" else service.server.submission_address[1]


async def _transaction(service: Service, door: str, sender: User | None, to: str) -> RawClient:
    """A session on ``door`` up to the 354 of DATA."""
    client = await RawClient.connect(_port(service, door))
    assert (await client.reply()).startswith("220")
    assert (await client.command("EHLO client.example")).startswith("250")
    mail_from = SENDER
    if door == "submission":
        assert sender is not None
        plain = base64.b64encode(f"\0{sender.email}\0{PASSWORD}".encode()).decode()
        assert (await client.command(f"AUTH PLAIN {plain}")).startswith("235")
        mail_from = sender.email
    assert (await client.command(f"MAIL FROM:<{mail_from}>")).startswith("250")
    assert (await client.command(f"RCPT TO:<{to}>")).startswith("250")
    assert (await client.command("DATA")).startswith("354")
    return client


async def _body(user: User, message_id: str) -> dict[str, object]:
    response = await user.client.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


# -- 1. SMTP smuggling ---------------------------------------------------------------


@pytest.mark.parametrize("door", ["mx", "submission"])
@pytest.mark.parametrize(
    "fake_end", [b"\n.\n", b"\r.\r\n", b"\n.\r\n"], ids=["LF.LF", "CR.CRLF", "LF.CRLF"]
)
async def test_only_crlf_dot_crlf_ends_data_so_nothing_is_smuggled(
    service: Service, door: str, fake_end: bytes
) -> None:
    alice = await service.user("alice")
    bob = await service.user("bob")
    author = alice.email if door == "submission" else SENDER
    smuggled = (
        f"MAIL FROM:<{author}>\r\nRCPT TO:<{bob.email}>\r\nDATA\r\n"
        f"From: {author}\r\nTo: {bob.email}\r\nSubject: smuggled\r\n\r\nforged body\r\n"
    ).encode()
    first = f"From: {author}\r\nTo: {bob.email}\r\nSubject: first\r\n\r\nhello".encode()

    client = await _transaction(service, door, alice, bob.email)
    await client.send(first + fake_end + smuggled + b".\r\nQUIT\r\n")
    replies = await client.rest()
    client.close()
    # One 250 for one mail, then QUIT's 221: the smuggled commands were data.
    assert [r[:3] for r in replies] == ["250", "221"], replies

    # Another mail, sent after: once it is in, anything smuggled would be too.
    marker = await _transaction(service, door, alice, bob.email)
    await marker.send(f"From: {author}\r\nSubject: marker\r\n\r\nm\r\n.\r\nQUIT\r\n".encode())
    assert [r[:3] for r in await marker.rest()] == ["250", "221"]
    marker.close()

    inbox = await bob.wait_for("inbox", 2)
    assert sorted(m["subject"] for m in inbox) == ["first", "marker"]
    first_mail = next(m for m in inbox if m["subject"] == "first")
    body = str((await _body(bob, first_mail["id"]))["body"])
    assert "Subject: smuggled" in body and "forged body" in body
    assert f"RCPT TO:<{bob.email}>" in body


# -- 2. bare line feeds ----------------------------------------------------------------


@pytest.mark.parametrize("door", ["mx", "submission"])
async def test_bare_lf_mail_is_accepted_and_stored_with_crlf(service: Service, door: str) -> None:
    alice = await service.user("alice")
    bob = await service.user("bob")
    author = alice.email if door == "submission" else SENDER
    lines = [f"From: {author}", f"To: {bob.email}", "Subject: unix mailer", ""]
    lines += [f"line {n} of a script's mail" for n in range(200)]
    client = await _transaction(service, door, alice, bob.email)
    await client.send("\n".join(lines).encode() + b"\r\n.\r\n")
    reply = await client.reply()
    assert reply.startswith("250 2.0.0"), reply  # not "500 Line too long"
    assert (await client.command("QUIT")).startswith("221")
    client.close()

    (mail,) = await bob.wait_for("inbox", 1)
    assert mail["subject"] == "unix mailer"
    assert "line 199 of a script's mail" in str((await _body(bob, mail["id"]))["body"])
    raw = (await bob.client.get(f"/v1/messages/{mail['id']}/raw")).content
    assert b"line 0 of a script's mail\r\nline 1 of" in raw
    assert raw.count(b"\n") == raw.count(b"\r\n")


async def test_a_line_really_over_the_limit_is_500_and_the_session_goes_on(
    service: Service,
) -> None:
    bob = await service.user("bob")
    for ending in (b"\r\n", b"\n"):
        client = await _transaction(service, "mx", None, bob.email)
        await client.send(b"Subject: long\r\n\r\n" + b"x" * 1200 + ending + b"end\r\n.\r\n")
        assert (await client.reply()) == "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"
        # The same session can still send mail.
        assert (await client.command(f"MAIL FROM:<{SENDER}>")).startswith("250")
        assert (await client.command(f"RCPT TO:<{bob.email}>")).startswith("250")
        assert (await client.command("DATA")).startswith("354")
        await client.send(b"Subject: short\r\n\r\nfine\r\n.\r\n")
        assert (await client.reply()).startswith("250 2.0.0")
        client.close()
    assert [m["subject"] for m in await bob.wait_for("inbox", 2)] == ["short", "short"]


# -- 3. huge header sections ---------------------------------------------------------

HEADER_LIMIT = 256 * 1024


def _many_fields(count: int) -> bytes:
    return b"".join(b"X-Field-%d: value number %d\r\n" % (n, n) for n in range(count))


def _folded_field(size: int) -> bytes:
    line = b" folded continuation of one enormous header field\r\n"
    return b"X-Enormous: start\r\n" + line * (size // len(line))


@pytest.mark.parametrize(
    ("door", "headers"),
    [
        ("mx", "100,000 fields"),
        ("submission", "100,000 fields"),
        ("mx", "20 MB folded field"),
    ],
)
async def test_huge_header_section_is_refused_in_bounded_time_and_memory(
    service: Service, door: str, headers: str
) -> None:
    alice = await service.user("alice")
    bob = await service.user("bob")
    author = alice.email if door == "submission" else SENDER
    section = _many_fields(100_000) if headers.startswith("100") else _folded_field(20 << 20)
    mail = f"From: {author}\r\nSubject: huge\r\n".encode() + section + b"\r\nbody\r\n.\r\n"
    client = await _transaction(service, door, alice, bob.email)
    started = time.monotonic()
    with PeakMemory() as peak:
        await client.send_in_pieces(mail)
        reply = await client.reply()
    elapsed = time.monotonic() - started
    assert reply == f"552 5.3.4 Message header section too big: at most {HEADER_LIMIT} bytes"
    assert elapsed < 10, f"took {elapsed:.1f} s"
    # Refused early and no longer buffered: far less than the mail itself.
    assert peak.growth_mib < 16, f"{len(mail) >> 20} MiB mail took {peak.growth_mib:.0f} MiB"
    # The session goes on, and a normal mail after it is delivered.
    assert (await client.command(f"MAIL FROM:<{author}>")).startswith("250")
    assert (await client.command(f"RCPT TO:<{bob.email}>")).startswith("250")
    assert (await client.command("DATA")).startswith("354")
    await client.send(f"From: {author}\r\nSubject: after\r\n\r\nok\r\n.\r\n".encode())
    assert (await client.reply()).startswith("250 2.0.0")
    client.close()
    assert [m["subject"] for m in await bob.wait_for("inbox", 1)] == ["after"]


async def test_a_large_header_section_under_the_limit_is_delivered(service: Service) -> None:
    bob = await service.user("bob")
    section = _many_fields(6000)  # about 190 KB, like a long mailing-list trail
    assert len(section) < HEADER_LIMIT
    client = await _transaction(service, "mx", None, bob.email)
    await client.send_in_pieces(b"Subject: big but fine\r\n" + section + b"\r\nbody\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    client.close()
    assert [m["subject"] for m in await bob.wait_for("inbox", 1)] == ["big but fine"]


# -- 5. slow and idle clients ----------------------------------------------------------


async def _dribble(client: RawClient, data: bytes, every: float) -> None:
    for byte in data:
        client.writer.write(bytes([byte]))
        await client.writer.drain()
        await asyncio.sleep(every)


async def test_a_client_dribbling_data_is_cut_off_while_others_are_served(
    start_service: StartService,
) -> None:
    service = await start_service({"smtp": {"data_timeout_seconds": 1.5}})
    bob = await service.user("bob")
    slow = await _transaction(service, "mx", None, bob.email)
    started = time.monotonic()
    dribbling = asyncio.create_task(_dribble(slow, b"Subject: slow\r\n\r\n" + b"x" * 100, 0.1))

    # Meanwhile another client sends a whole mail at once.
    fast = await _transaction(service, "mx", None, bob.email)
    await fast.send(b"Subject: fast\r\n\r\nquick\r\n.\r\n")
    assert (await fast.reply()).startswith("250 2.0.0")
    assert time.monotonic() - started < 1.5
    fast.close()

    # The dribbler is told why, then hung up on, at the data timeout.
    replies = await slow.rest(timeout=10)
    cut_after = time.monotonic() - started
    dribbling.cancel()
    with pytest.raises((asyncio.CancelledError, ConnectionError)):
        await dribbling
    slow.close()
    assert replies and replies[-1].startswith("421 4.4.2"), replies
    assert 1.4 < cut_after < 5
    assert [m["subject"] for m in await bob.wait_for("inbox", 1)] == ["fast"]
    await asyncio.sleep(0.3)
    assert len(await bob.messages("inbox")) == 1  # nothing of the slow mail


# Above the second a thousand greetings take on the distributed profile (one
# Redis count each, for the per-IP connection limit).
IDLE_TIMEOUT = 3


async def test_many_idle_connections_are_bounded_and_each_closed_after_the_timeout(
    start_service: StartService,
) -> None:
    # The default per-IP limits stay: the idle clients come from many
    # 127.0.0.x addresses, 20 (the default limit) from each.
    service = await start_service({"smtp": {"timeout_seconds": IDLE_TIMEOUT}})
    bob = await service.user("bob")
    count, per_address = 1000, 20

    with PeakMemory() as peak:
        opened = time.monotonic()
        idle = await asyncio.gather(
            *(
                RawClient.connect(service.smtp_port, f"127.0.0.{2 + n // per_address}")
                for n in range(count)
            )
        )
        greetings = await asyncio.gather(*(c.reply() for c in idle))
    refused = [g for g in greetings if not g.startswith("220")]
    assert not refused, refused[:3]
    assert peak.growth_mib < 64, f"{count} idle sessions took {peak.growth_mib:.0f} MiB"

    # A new client is served while they are all open.
    client = await _transaction(service, "mx", None, bob.email)
    await client.send(b"Subject: while idle\r\n\r\nserved\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    assert time.monotonic() - opened < IDLE_TIMEOUT  # before any idle one was closed
    client.close()

    # Each idle one is told and hung up on after the idle timeout, not before.
    async def ending(client: RawClient) -> tuple[list[str], float]:
        lines = await client.rest(timeout=10)
        return lines, time.monotonic() - opened

    endings = await asyncio.gather(*(ending(c) for c in idle))
    for client in idle:
        client.close()
    assert all(lines and lines[-1].startswith("421 4.4.2") for lines, _ in endings)
    closed_at = sorted(at for _, at in endings)
    assert closed_at[0] > IDLE_TIMEOUT - 0.1 and closed_at[-1] < 3 * IDLE_TIMEOUT, closed_at
    assert [m["subject"] for m in await bob.wait_for("inbox", 1)] == ["while idle"]


async def test_a_client_dribbling_a_command_is_cut_off_at_the_idle_timeout(
    start_service: StartService,
) -> None:
    service = await start_service({"smtp": {"timeout_seconds": 1}})
    client = await RawClient.connect(service.smtp_port)
    assert (await client.reply()).startswith("220")
    started = time.monotonic()
    dribbling = asyncio.create_task(_dribble(client, b"EHLO " + b"a" * 100, 0.1))
    replies = await client.rest(timeout=10)
    dribbling.cancel()
    with pytest.raises((asyncio.CancelledError, ConnectionError)):
        await dribbling
    client.close()
    assert replies and replies[-1].startswith("421 4.4.2"), replies
    assert 0.9 < time.monotonic() - started < 5


async def test_worker_in_parses_huge_header_sections_in_bounded_time_and_memory(
    service: Service,
) -> None:
    """Mail that reached the incoming queue another way (a larger limit
    then, a peer of ours): worker-in's MIME parsing of 100,000 fields and a
    4 MB folded field stays within seconds and a bounded multiple of the
    mail's size, and the reader gets the mail."""
    bob = await service.user("bob")
    raw = (
        b"From: sender@outside.example\r\nSubject: parsed anyway\r\n"
        + _many_fields(100_000)
        + _folded_field(4 << 20)
        + b"\r\nthe body\r\n"
    )
    envelope = Envelope(
        mail_from=SENDER,
        recipients=[bob.email],
        client_ip="192.0.2.1",
        helo="client.example",
        tls=False,
    )
    started = time.monotonic()
    with PeakMemory() as peak:
        await service.runtime.incoming.accept(envelope, raw)
        inbox = await bob.wait_for("inbox", 1, timeout=30)
    elapsed = time.monotonic() - started
    assert [m["subject"] for m in inbox] == ["parsed anyway"]
    assert elapsed < 10, f"took {elapsed:.1f} s"
    size_mib = len(raw) / (1 << 20)
    assert peak.growth_mib < 40 * size_mib, f"{size_mib:.0f} MiB took {peak.growth_mib:.0f} MiB"
    assert "the body" in str((await _body(bob, inbox[0]["id"]))["body"])
