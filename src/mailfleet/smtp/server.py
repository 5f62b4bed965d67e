"""Our aiosmtpd ``SMTP`` protocol: enhanced status codes (RFC 3463) on the
replies aiosmtpd writes itself, PIPELINING advertised (RFC 2920; aiosmtpd
reads commands in order from a buffered stream, so pipelined clients work),
and per-client-IP connection limits applied before the greeting."""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from aiosmtpd.smtp import SMTP

from mailfleet.errors import RateLimited
from mailfleet.ratelimit import RateLimiter

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
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "421 Too many connections": "421 4.7.0 Too many connections",
}


# A plain ``<dot-atom@domain>`` path, as nearly every client sends it: parsed
# here, since aiosmtpd's general parser (the email package's header parser)
# costs more than the rest of the MAIL or RCPT command.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?=$|[ \t]+[^ \t(])"
)


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


class MailfleetSMTP(SMTP):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._counted_ip: str | None = None

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.match(arg)
        if plain is None:  # anything unusual: aiosmtpd's full parser
            result: tuple[str | None, str | None] = super()._getaddr(arg)
            return result
        address = plain.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[plain.end() :].lstrip(" \t")

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _ENHANCED.get(status, status)
        await super().push(status)

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        refusal = await self.limits.admit(ip)
        if refusal is not None:
            log.info("refused connection from %s: %s", ip, refusal)
            await super().push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        self._counted_ip = ip
        self.limits.open[ip] += 1
        try:
            await super()._handle_client()
        finally:
            self._release()

    def _release(self) -> None:
        if self._counted_ip is not None:
            self.limits.open[self._counted_ip] -= 1
            if self.limits.open[self._counted_ip] <= 0:
                del self.limits.open[self._counted_ip]
            self._counted_ip = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release()
