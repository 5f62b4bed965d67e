"""The SMTP client worker-out delivers with (RFC 5321), on asyncio streams.

Why not aiosmtplib: its protocol keeps one reply waiter per command and drops
data that arrives while a parsed reply waits to be picked up, so commands
cannot be pipelined (RFC 2920). Pipelining MAIL, every RCPT and DATA in one
write turns N+3 round trips into two, which matters most on the long-distance
connections outbound mail travels. The client is small: it only speaks the
commands delivery needs (EHLO/HELO, STARTTLS, MAIL, RCPT, DATA, RSET, QUIT).

Opportunistic TLS (RFC 3207, RFC 7435): STARTTLS whenever the server offers
it, without certificate checks, as MTAs do when no policy (MTA-STS, DANE)
says otherwise; a server whose TLS handshake fails is retried in plain text.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from dataclasses import dataclass

# RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets; be lenient.
_MAX_REPLY_LINE = 4096
_MAX_REPLY_LINES = 100
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # the reply's lines after the code, joined by "\n"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 status code the reply starts with, if any."""
        match = _ENHANCED.match(self.text)
        if match and match.group(1) == str(self.code)[0]:
            return match.group(0)
        return None

    def status(self) -> str:
        """An enhanced status code for a DSN: the server's own, or one the
        reply's class implies (RFC 3463 section 3.1: x.0.0)."""
        return self.enhanced or f"{str(self.code)[0]}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text.replace(chr(10), ' ')}"


class SmtpError(Exception):
    """The session failed: no connection, a refused greeting or EHLO, a
    timeout, the peer hung up. ``reply`` is the server's answer when it gave
    one; ``temporary`` says whether to try again later."""

    def __init__(self, message: str, *, reply: Reply | None = None, temporary: bool = True):
        super().__init__(message)
        self.reply = reply
        self.temporary = temporary


class TlsFailed(SmtpError):
    """STARTTLS was offered but the handshake failed."""


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """Per-recipient answers of one mail transaction. ``data`` is the reply
    to the end of data (None when no recipient was accepted); a recipient is
    delivered when its RCPT and ``data`` were both positive."""

    mail: Reply
    recipients: dict[str, Reply]
    data: Reply | None


def opportunistic_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SmtpConnection:
    """One open SMTP session, after EHLO (and STARTTLS when offered)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        host: str,
        address: str,
        command_timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.host = host  # the MX name, for logs and DSNs
        self.address = address
        self.command_timeout = command_timeout
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.greeting: Reply | None = None
        # Set once message content went out: after that, a broken session
        # may have delivered, so the caller must not resend at once.
        self.data_sent = False

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        *,
        host: str,
        helo: str,
        connect_timeout: float,
        command_timeout: float,
        tls_context: ssl.SSLContext | None,
    ) -> SmtpConnection:
        """Connects, reads the greeting, says EHLO and starts TLS if offered
        and ``tls_context`` is given. Raises SmtpError (TlsFailed)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, limit=_MAX_REPLY_LINE * 2),
                connect_timeout,
            )
        except TimeoutError:
            raise SmtpError(f"connection to {address}:{port} timed out") from None
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise SmtpError(f"cannot connect to {address}:{port}: {reason}") from None
        connection = cls(
            reader, writer, host=host, address=address, command_timeout=command_timeout
        )
        try:
            connection.greeting = await connection.read_reply()
            if connection.greeting.code != 220:
                raise SmtpError(
                    f"{host} refused the connection: {connection.greeting}",
                    reply=connection.greeting,
                    temporary=not 500 <= connection.greeting.code < 600,
                )
            await connection._hello(helo)
            if tls_context is not None and "STARTTLS" in connection.extensions:
                await connection._starttls(tls_context, helo)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _hello(self, helo: str) -> None:
        reply = await self.command(f"EHLO {helo}")
        if reply.code == 250:
            self.extensions = _extensions(reply.text)
            return
        reply = await self.command(f"HELO {helo}")
        if reply.code != 250:
            raise SmtpError(
                f"{self.host} refused HELO: {reply}", reply=reply, temporary=reply.temporary
            )
        self.extensions = {}

    async def _starttls(self, context: ssl.SSLContext, helo: str) -> None:
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return  # offered but refused: go on in plain text, as the server wants
        try:
            await asyncio.wait_for(
                self._writer.start_tls(context, server_hostname=self.host),
                self.command_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise TlsFailed(f"TLS handshake with {self.host} failed: {exc}") from None
        self.tls = True
        await self._hello(helo)

    @property
    def max_size(self) -> int | None:
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()

    @property
    def is_open(self) -> bool:
        return not self._writer.is_closing() and not self._reader.at_eof()

    async def quit(self) -> None:
        try:
            await asyncio.wait_for(self.command("QUIT"), 5)
        except (SmtpError, TimeoutError):
            pass
        finally:
            self.close()

    async def read_reply(self) -> Reply:
        """One whole reply within ``command_timeout`` (RFC 5321 section
        4.5.3.2), however its bytes and lines trickle in: a deadline per
        line let a server that dribbles a long multi-line reply hold the
        delivery for lines times the timeout."""
        try:
            async with asyncio.timeout(self.command_timeout):
                return await self._read_reply()
        except TimeoutError:
            raise SmtpError(f"{self.host} did not answer in time") from None

    async def _read_reply(self) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await self._reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: a line over the limit
                raise SmtpError(f"reading from {self.host} failed: {exc}") from None
            if not raw.endswith(b"\n"):
                raise SmtpError(f"{self.host} closed the connection")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise SmtpError(f"{self.host} sent a malformed reply: {line[:100]!r}")
            if code and int(line[:3]) != code:
                raise SmtpError(f"{self.host} sent an inconsistent multi-line reply")
            code = int(line[:3])
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(code, "\n".join(lines))
            if len(lines) > _MAX_REPLY_LINES:
                raise SmtpError(f"{self.host} sent an endless reply")

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.command_timeout)
        except TimeoutError:
            raise SmtpError(f"sending to {self.host} timed out") from None
        except OSError as exc:
            raise SmtpError(f"sending to {self.host} failed: {exc}") from None

    async def command(self, line: str) -> Reply:
        if "\r" in line or "\n" in line:
            raise ValueError("an SMTP command is one line")
        await self._write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    async def rset(self) -> bool:
        try:
            return (await self.command("RSET")).code == 250
        except SmtpError:
            self.close()
            return False

    async def send(
        self, mail_from: str, recipients: list[str], message: bytes
    ) -> TransactionResult:
        """One mail transaction for ``message`` (CRLF line ends). MAIL, the
        RCPTs and DATA go in one write when the server supports PIPELINING.
        Raises SmtpError when the session breaks; replies (positive or not)
        are returned."""
        self.data_sent = False
        params = [f"SIZE={len(message)}"] if "SIZE" in self.extensions else []
        if "8BITMIME" in self.extensions and not message.isascii():
            params.append("BODY=8BITMIME")
        if "SMTPUTF8" in self.extensions and not (
            mail_from.isascii() and all(r.isascii() for r in recipients)
        ):
            params.append("SMTPUTF8")
        mail = " ".join([f"MAIL FROM:<{mail_from}>", *params])
        rcpts = [f"RCPT TO:<{r}>" for r in recipients]
        answers: dict[str, Reply] = {}
        if "PIPELINING" in self.extensions:
            await self._write("".join(f"{c}\r\n" for c in (mail, *rcpts, "DATA")).encode())
            mail_reply = await self.read_reply()
            for recipient in recipients:
                answers[recipient] = await self.read_reply()
            data_reply = await self.read_reply()
        else:
            mail_reply = await self.command(mail)
            if not mail_reply.ok:
                return TransactionResult(mail_reply, {r: mail_reply for r in recipients}, None)
            for recipient, line in zip(recipients, rcpts, strict=True):
                answers[recipient] = await self.command(line)
            if not any(reply.ok for reply in answers.values()):
                await self.rset()
                return TransactionResult(mail_reply, answers, None)
            data_reply = await self.command("DATA")
        if not mail_reply.ok:
            # Pipelined RCPTs after a refused MAIL mean nothing (RFC 2920 section 3.1).
            if data_reply.code == 354:
                await self._write(b".\r\n")
                await self.read_reply()
            await self.rset()
            return TransactionResult(mail_reply, {r: mail_reply for r in recipients}, None)
        accepted = [r for r, reply in answers.items() if reply.ok]
        if data_reply.code != 354:
            await self.rset()
            return TransactionResult(mail_reply, answers, data_reply if accepted else None)
        if not accepted:
            # The server said 354 with no valid recipient: end the empty
            # message, which it must refuse (RFC 2920 section 3.1).
            await self._write(b".\r\n")
            await self.read_reply()
            await self.rset()
            return TransactionResult(mail_reply, answers, None)
        self.data_sent = True
        await self._write(dot_stuff(message))
        return TransactionResult(mail_reply, answers, await self.read_reply())


def _extensions(text: str) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters; the first line is the greeting."""
    found: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.upper()] = params.strip()
    return found


def normalize_crlf(message: bytes) -> bytes:
    """CRLF line ends throughout, as a message goes on the wire (and as a
    DKIM signature must be computed: over exactly what is sent)."""
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def dot_stuff(message: bytes) -> bytes:
    """A message with CRLF line ends (``normalize_crlf``) as DATA content
    (RFC 5321 section 4.5.2): a leading dot doubled, ended by CRLF.CRLF."""
    if not message:
        return b".\r\n"
    body = message[:-2] if message.endswith(b"\r\n") else message
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b"\r\n.\r\n"
