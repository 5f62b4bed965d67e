"""Our aiosmtpd ``SMTP`` protocol: enhanced status codes (RFC 3463) on the
replies aiosmtpd writes itself, PIPELINING advertised (RFC 2920; aiosmtpd
reads commands in order from a buffered stream, so pipelined clients work),
per-client-IP connection limits applied before the greeting (to the client a
trusted balancer names in a PROXY protocol header, when it sends one), and a DATA
reader that takes the mail in whole buffers rather than one awaited line at a
time (aiosmtpd's replies for CRLF mail).

Hostile clients (decision 0025): only CRLF.CRLF ends DATA, so ``<LF>.<LF>``
and its kin cannot smuggle a second mail; bare LF and bare CR become CRLF
(``proto/smtp_data.py``); a header section over ``limits.max_header_bytes``
is refused with 552 5.3.4 and stops being buffered at once; a client idle
for ``smtp.timeout_seconds`` before a command (RFC 5321 section 4.5.3.2.7),
or slower than ``smtp.data_timeout_seconds`` over a whole DATA, is told 421
4.4.2 and hung up on."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import Counter
from typing import Any, cast

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import MISSING, SMTP

from mailfleet.errors import RateLimited
from mailfleet.metrics import (
    SMTP_MAILS,
    SMTP_REFUSALS,
    SMTP_SESSIONS,
    SMTP_SESSIONS_OPEN,
    reply_code,
)
from mailfleet.proto.smtp_data import header_section_size, to_crlf, unstuff
from mailfleet.ratelimit import RateLimiter
from mailfleet.storage.errors import StorageError, StorageFull

# Our disk is full (RFC 3463 4.3.1 "mail system full"): the client keeps the
# mail and tries again later, as for any 4xx, and its log says why.
STORAGE_FULL_REPLY = "452 4.3.1 Insufficient system storage; try again later"

log = logging.getLogger("mailfleet.smtp")

# aiosmtpd's own replies, with the enhanced code a client can act on.
_ENHANCED = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "500 Line too long (see RFC5321 4.5.3.1.6)": (
        "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"
    ),
    "421 Too many connections": "421 4.7.0 Too many connections",
    # aiosmtpd hangs up after this one: a server that closes the channel says
    # 421 (RFC 5321 section 3.8), else the client takes the 5xx as a verdict
    # on its command and finds the connection gone (found by tests/smtp/test_smtp_fuzz.py).
    "502 5.5.1 Too many unrecognized commands, goodbye.": (
        "421 4.7.0 Too many unrecognized commands; closing connection"
    ),
}


# A plain ``<dot-atom@domain>`` path, as nearly every client sends it: parsed
# here, since aiosmtpd's general parser (the email package's header parser)
# costs more than the rest of the MAIL or RCPT command.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?=$|[ \t]+[^ \t(])"
)


_END_OF_DATA = b"\r\n.\r\n"
_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH = "552 Error: Too much mail data"


def _header_too_big(limit: int) -> str:
    return f"552 5.3.4 Message header section too big: at most {limit} bytes"


def _data_error(data: bytes | bytearray, size_limit: int, line_limit: int) -> str | None:
    """aiosmtpd's verdict on the DATA lines ``data`` (CRLF-terminated, still
    dot-stuffed): the first line longer than ``line_limit`` with its CRLF, or
    the line that takes the total past ``size_limit`` (0: none), decides."""
    lines = data.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    if max(map(len, lines), default=0) + 2 <= line_limit and (
        not size_limit or len(data) <= size_limit
    ):
        return None
    total = 0
    for line in lines:
        if len(line) + 2 > line_limit:
            return _TOO_LONG
        total += len(line) + 2
        if size_limit and total > size_limit:
            return _TOO_MUCH
    return None


def _content_error(
    content: bytes, size_limit: int, line_limit: int, header_limit: int
) -> str | None:
    """The reply refusing DATA ``content`` (CRLF line ends, still
    dot-stuffed), or None: a long line or too much data as aiosmtpd decides,
    else a header section over ``header_limit`` (0: none)."""
    error = _data_error(content, size_limit, line_limit)
    if (
        error is None
        and header_limit
        and header_section_size(content, header_limit, line_limit) > header_limit
    ):
        error = _header_too_big(header_limit)
    return error


def _early_error(
    data: bytearray, size_limit: int, line_limit: int, header_limit: int, otherwise: str | None
) -> str | None:
    """The refusal decided before the end of data, from the complete lines
    of ``data`` (the DATA command's CRLF first): a long line, too much
    data, a header section too big; else ``otherwise`` when the line still
    arriving is too long or not."""
    partial = data.rfind(b"\n") + 1
    lines = to_crlf(bytes(data[2:partial]))
    error = _content_error(lines, size_limit, line_limit, header_limit)
    if error is None and len(data) - partial + 2 > line_limit:
        return _TOO_LONG
    return error or otherwise


class ConnectionLimits:
    """Concurrent and per-minute connection counts per client IP."""

    def __init__(self, limiter: RateLimiter, concurrent: int, per_minute: int) -> None:
        self.limiter = limiter
        self.concurrent = concurrent
        self.per_minute = per_minute
        self.open: Counter[str] = Counter()

    async def admit(self, ip: str) -> str | None:
        """None to go on, or the reply to hang up with."""
        if self.open[ip] >= self.concurrent:
            return "421 4.7.0 Too many connections from your address; try again later"
        try:
            await self.limiter.hit(f"smtp:conn:{ip}", self.per_minute, 60, "connections")
        except RateLimited:
            return "421 4.7.0 Too many connections from your address; try again later"
        return None


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

# A balancer writes its PROXY header at once; a peer that sends nothing this
# long is not one (aiosmtpd warns below 3 s).
PROXY_HEADER_TIMEOUT = 10.0


def proxy_networks(trusted: list[str]) -> Networks:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _is_in(ip: str, networks: Networks) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class MailfleetSMTP(SMTP):
    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        proxy_from: Networks = (),
        header_limit: int = 0,
        data_timeout: float | None = None,
        service: str = "smtp-in",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        # Peers whose connections open with a PROXY protocol header naming the
        # real client (HAProxy ``send-proxy``); empty: PROXY is off.
        self.proxy_from = proxy_from
        # The largest header section accepted (0: only the size limit).
        self.header_limit = header_limit
        # The longest a whole DATA transfer may take (None: ``timeout``).
        self.data_timeout = data_timeout
        # ``smtp-in`` or ``submission``: the label of this session's metrics.
        self.service = service
        # The command being answered, when its refusals are counted.
        self._stage: str | None = None
        self._counted_ip: str | None = None

    async def handle_exception(self, error: Exception) -> str:
        """An error no handler answered: aiosmtpd would say ``500 Error``, a
        permanent failure that makes the sending MTA bounce the mail. Ours
        are never the client's fault, and a backend that is down comes back:
        451, try later (RFC 5321 section 4.2.5)."""
        assert self.session is not None
        log.error("%r SMTP session error", self.session.peer, exc_info=error)
        if isinstance(error, StorageFull):
            return STORAGE_FULL_REPLY
        if isinstance(error, StorageError):
            return "451 4.3.0 Temporary storage failure, try again later"
        return "451 4.3.0 Local error in processing, try again later"

    def _timeout_cb(self) -> None:
        """aiosmtpd hangs up without a word; RFC 5321 section 3.8 wants a 421
        first. A client that reads nothing (its window full) is dropped."""
        # A stream transport, though not always a subclass of asyncio's (uvloop's).
        transport = cast(asyncio.Transport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        assert self.session is not None
        log.info("%r timed out; closing", self.session.peer)
        transport.write(f"421 4.4.2 {self.hostname} Timeout exceeded; closing\r\n".encode())
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.match(arg)
        if plain is None:  # anything unusual: aiosmtpd's full parser
            result: tuple[str | None, str | None] = super()._getaddr(arg)
            return result
        address = plain.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[plain.end() :].lstrip(" \t")

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (same checks, size and line limits, dot unstuffing
        and hook), reading whatever the stream has buffered at each step
        instead of awaiting each line: a 4 KiB mail is one or two reads, not
        60. Only CRLF.CRLF ends the data; bare LF and CR become CRLF before
        lines are measured and dots removed. Bytes that follow the final dot
        (pipelined commands, RFC 2920) go back to the front of the stream for
        the command loop."""
        reader = self._reader
        if self._decode_data or not isinstance(getattr(reader, "_buffer", None), bytearray):
            await super().smtp_DATA(arg)  # text mode, or a StreamReader we do not know
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if self.data_timeout is not None:
            self._reset_timeout(self.data_timeout)
        size_limit = self.data_size_limit or 0
        line_limit = self.line_length_limit
        header_limit = self.header_limit
        # Past this many bytes without the end of the header section, the
        # section is over the limit whatever follows.
        header_window = 2 + header_limit + line_limit + 2 if header_limit else 0
        # The CRLF before the first line is the DATA command's: an empty mail
        # ends with the first ".\r\n".
        data = bytearray(b"\r\n")
        error: str | None = None
        while True:
            start = max(0, len(data) - 4)
            try:
                chunk = await reader.read(65536)
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            if not chunk:  # end of stream: the session is over
                return
            data += chunk
            end = data.find(_END_OF_DATA, start)
            if end != -1:
                break
            if error is None and size_limit and len(data) - 5 > size_limit:
                error = _early_error(data, size_limit, line_limit, header_limit, _TOO_MUCH)
            if error is None and header_window and len(data) > header_window:
                error = _early_error(data[:header_window], 0, line_limit, header_limit, None)
                header_window = 0  # the section ended in time: decided at the end
            if error is not None and len(data) > 65536:
                # Refused whatever follows: keep only what the end-of-data
                # search needs.
                del data[:-4]
        leftover = data[end + 5 :]
        if leftover:
            # The next commands, for the command loop.
            reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
        self._reset_timeout()
        content = to_crlf(bytes(data[2 : end + 2]))
        del data
        if error is None:
            error = _content_error(content, size_limit, line_limit, header_limit)
        if error is not None:
            self._count_mail(error)
            await self.push(error)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        original_content = unstuff(content)
        del content
        self.envelope.content = original_content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        reply = "250 OK" if status is MISSING else status
        self._count_mail(reply)
        await self.push(reply)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self._stage = "MAIL"
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._stage = None

    async def smtp_RCPT(self, arg: str | None) -> None:
        self._stage = "RCPT"
        try:
            await super().smtp_RCPT(arg)
        finally:
            self._stage = None

    def _count_mail(self, reply: str) -> None:
        code = reply_code(_ENHANCED.get(reply, reply))
        result = "accepted" if code.startswith("2") else "refused"
        SMTP_MAILS.labels(self.service, result, code).inc()

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _ENHANCED.get(status, status)
            if self._stage is not None and status[:1] in ("4", "5"):
                SMTP_REFUSALS.labels(self.service, self._stage, reply_code(status)).inc()
        await super().push(status)

    async def _read_proxy_header(self) -> bool:
        """The PROXY protocol header (v1 or v2) a trusted balancer sends before
        anything else; the client it names becomes the session's peer, so the
        limits below, the Received line and SPF see the client, not the
        balancer. A header without addresses (v1 UNKNOWN, v2 LOCAL: the
        balancer's own health check) keeps the balancer's. False: hang up."""
        assert self.session is not None
        balancer = self.session.peer
        try:
            async with asyncio.timeout(PROXY_HEADER_TIMEOUT):
                data = await get_proxy(self._reader)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            data = None
        if data is None or not data.valid:
            log.warning(
                "no valid PROXY header from balancer %s: %s",
                balancer,
                "none" if data is None else data.error,
            )
            return False
        if data.src_addr is not None and data.src_port is not None:
            # aiosmtpd annotates ``peer`` as str, yet it holds the peername tuple.
            self.session.peer = (str(data.src_addr), int(data.src_port))  # type: ignore[assignment]
            self.session.proxy_data = data
        return True

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        if self.proxy_from and _is_in(ip, self.proxy_from):
            if not await self._read_proxy_header():
                if self.transport is not None:
                    self.transport.close()
                return
            assert self.session is not None
            client = self.session.peer
            ip = client[0] if isinstance(client, tuple) else str(client)
        refusal = await self.limits.admit(ip)
        if refusal is not None:
            log.info("refused connection from %s: %s", ip, refusal)
            SMTP_SESSIONS.labels(self.service, "refused").inc()
            await super().push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        self._counted_ip = ip
        self.limits.open[ip] += 1
        SMTP_SESSIONS.labels(self.service, "admitted").inc()
        SMTP_SESSIONS_OPEN.labels(self.service).inc()
        try:
            await super()._handle_client()
        finally:
            self._release()

    def _release(self) -> None:
        if self._counted_ip is not None:
            SMTP_SESSIONS_OPEN.labels(self.service).dec()
            self.limits.open[self._counted_ip] -= 1
            if self.limits.open[self._counted_ip] <= 0:
                del self.limits.open[self._counted_ip]
            self._counted_ip = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release()
