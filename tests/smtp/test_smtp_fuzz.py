"""The MX's SMTP command parser, fuzzed over a real socket: sessions of
commands (MAIL FROM and RCPT TO with arbitrary paths and ESMTP parameters,
unknown and lower-case verbs, odd bytes, over-long lines) sent to a running
smtp-in. Whatever a client sends, every reply is a valid SMTP reply
(RFC 5321 section 4.2: three digits 2xx-5xx, "-" on every line of a
multi-line reply but the last), one per command line, and the server goes on
serving the next client. The long form: bench/fuzz.py.

Hypothesis runs in a thread with blocking sockets while the test's event loop
serves the SMTP server it talks to."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import StartService

REPLY_LINE = re.compile(rb"\A[2-5][0-9][0-9](?:[ -][^\r\n]*)?\Z")
TIMEOUT = 15.0

_PATHS = [
    "<>",
    "<alice@example.com>",
    "<ALICE@EXAMPLE.COM>",
    "<sender@outside.example>",
    "alice@example.com",
    "<@relay.example,@b.example:alice@example.com>",
    '<"quoted local part"@example.com>',
    "<a@[127.0.0.1]>",
    "<a@[IPv6:::1]>",
    "<postmaster>",
    "<user@üñí.example>",
    "<" + "x" * 300 + "@example.com>",
    "< alice@example.com >",
    "<alice@example.com",
    "<<alice@example.com>>",
    "",
]
_PARAMS = [
    "SIZE=1000",
    "SIZE=99999999999999999999",
    "SIZE=-1",
    "SIZE=abc",
    "SIZE",
    "BODY=8BITMIME",
    "BODY=7BIT",
    "BODY=BINARYMIME",
    "BODY=nonsense",
    "SMTPUTF8",
    "RET=FULL",
    "RET=HDRS",
    "ENVID=QQ314159",
    "AUTH=<>",
    "AUTH=alice@example.com",
    "NOTIFY=SUCCESS,FAILURE",
    "ORCPT=rfc822;alice@example.com",
    "X-UNKNOWN=1",
    "=",
    "==",
    "SIZE=1 SIZE=2",
]
_VERBS = [
    "HELO",
    "EHLO",
    "MAIL",
    "RCPT",
    "DATA",
    "RSET",
    "NOOP",
    "VRFY",
    "EXPN",
    "HELP",
    "AUTH",
    "STARTTLS",
    "BDAT",
    "XCLIENT",
    "ETRN",
    "TURN",
    "QUIT",
]
# Anything but the line end: the one byte sequence that splits a command in two.
_ODD = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def command(draw: st.DrawFn) -> bytes:
    verb = draw(st.sampled_from(_VERBS) | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=8))
    if draw(st.booleans()):
        verb = draw(st.sampled_from([verb.lower(), verb.title(), verb]))
    upper = verb.upper()
    if upper in ("MAIL", "RCPT"):
        keyword = "FROM:" if upper == "MAIL" else "TO:"
        keyword = draw(st.sampled_from([keyword, keyword.lower(), keyword[:-1], keyword + " "]))
        params = draw(st.lists(st.sampled_from(_PARAMS), max_size=4))
        args = " ".join([keyword + draw(st.sampled_from(_PATHS)), *params]).encode()
    elif upper in ("HELO", "EHLO"):
        args = draw(st.sampled_from([b"client.example", b"[192.0.2.1]", b"", b"\xc3\xa9.example"]))
    else:
        args = draw(st.sampled_from([b"", b"alice", b"PLAIN", b"LOGIN", b"100 LAST"]))
    line = verb.encode() + (b" " + args if args else b"")
    if draw(st.integers(0, 4)) == 0:
        line += draw(_ODD)
    if draw(st.integers(0, 20)) == 0:
        line += b"x" * draw(st.integers(900, 3000))  # past the 1000-octet line limit
    return line


@dataclass
class Client:
    """A blocking SMTP client that checks every reply it reads."""

    port: int
    sock: socket.socket = field(init=False)
    buffer: bytes = b""
    transcript: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)

    def reply(self) -> tuple[int, list[bytes]]:
        """One whole reply; fails on anything that is not an SMTP reply."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                assert chunk, f"connection closed mid-reply after {self.transcript!r}"
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            self.transcript.append(b"S: " + line)
            assert REPLY_LINE.match(line), f"not an SMTP reply line: {line!r}"
            if lines:
                assert line[:3] == lines[0][:3], f"reply code changed mid-reply: {[*lines, line]}"
            lines.append(line)
            if len(line) == 3 or line[3:4] == b" ":
                return int(line[:3]), lines

    def send(self, line: bytes) -> tuple[int, list[bytes]]:
        self.transcript.append(b"C: " + line)
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """Whether the server hung up (after a 221 or 421)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()


def run_session(port: int, commands: list[bytes]) -> None:
    """One client's session: greeting, ``commands``, each answered once."""
    client = Client(port)
    try:
        code, _ = client.reply()
        assert code == 220, client.transcript
        for line in commands:
            code, _ = client.send(line)
            if code == 354:  # DATA accepted: an empty mail ends it
                code, _ = client.send(b".")
            elif code == 334:  # an AUTH challenge: cancelled (RFC 4954 section 4)
                code, _ = client.send(b"*")
            if code in (221, 421):
                client.sock.settimeout(TIMEOUT)
                assert client.closed(), f"{code} yet the connection stays open"
                return
            if code == 220:  # STARTTLS: what follows would be TLS
                return
    finally:
        client.close()


def healthy_mail(port: int) -> None:
    """The next client is served whole: a mail to a hosted mailbox goes through."""
    client = Client(port)
    try:
        assert client.reply()[0] == 220
        assert client.send(b"EHLO next.example")[0] == 250
        assert client.send(b"MAIL FROM:<next@outside.example>")[0] == 250
        assert client.send(b"RCPT TO:<alice@example.com>")[0] == 250
        assert client.send(b"DATA")[0] == 354
        assert client.send(b"Subject: still serving\r\n\r\nhello\r\n.")[0] == 250
        assert client.send(b"QUIT")[0] == 221
    finally:
        client.close()


def fuzz_commands(port: int, max_examples: int) -> tuple[int, int]:
    """Runs the fuzzing; answers how many sessions and commands it sent."""
    sent = [0, 0]

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(command(), min_size=1, max_size=10))
    @example([b"EHLO x", b"MAIL FROM:<a@b.example> SIZE=abc", b"RCPT TO:<alice@example.com>"])
    @example([b"MAIL FROM:<>", b"RCPT TO:<alice@example.com> NOTIFY=NEVER", b"DATA", b"QUIT"])
    @example([b"EHLO \xff\xfe", b"mail from:<\x00@x>", b"\x80\x81", b"", b" "])
    @example([b"AUTH PLAIN", b"STARTTLS"])
    # Found by this test: aiosmtpd's "502 ... goodbye" then a hang-up; now 421.
    @example([b"BDAT"] * 10)
    @example([b"HELO", b"MAIL FROM:<" + b"x" * 5000 + b">"])
    def session(commands: list[bytes]) -> None:
        sent[0] += 1
        sent[1] += len(commands)
        run_session(port, commands)

    session()
    return sent[0], sent[1]


async def test_smtp_commands_fuzzed_over_a_socket(start_service: StartService) -> None:
    generous = 1_000_000
    service = await start_service(
        {
            "smtp": {
                "connections_per_minute_per_ip": generous,
                "messages_per_minute_per_ip": generous,
            }
        }
    )
    await service.user("alice")
    sessions, commands = await asyncio.to_thread(fuzz_commands, service.smtp_port, 200)
    print(f"{sessions} SMTP sessions, {commands} commands")
    assert sessions >= 200
    await asyncio.to_thread(healthy_mail, service.smtp_port)
