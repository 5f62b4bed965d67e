"""Login throttling: the one rule for every door that takes a password
(``POST /v1/sessions``, submission AUTH, IMAP when it comes), counted in the
shared cache so that every process sees the same failures (in-process on the
embedded profile, Redis on the fleet).

Two budgets, each of failures within ``auth.failed_login_window_seconds``:

- per address, ``auth.failed_logins_per_address``: a guesser working on one
  account, from however many clients;
- per client, ``auth.failed_logins_per_ip``: a guesser trying one password on
  many addresses. Larger, for the people behind one NAT; an IPv6 client is
  its /64, which one subscriber usually holds whole.

A budget spent locks its address or client for ``auth.lockout_seconds``,
doubled for each further lock within ``auth.lockout_memory_seconds``, at most
``auth.max_lockout_seconds``. While locked, an attempt is refused before the
password is looked at, the right password too (else the lock would still
answer the guesser's question), with the time left: HTTP 429
``too_many_attempts`` and ``Retry-After``, SMTP 454 4.7.0. A login that
succeeds clears its address's failures and lock history; never the client's
(a guesser holding one account could clear it at will).

The price: anyone can lock an address out for a while by failing on it. The
first lock is short, and it grows only while the failures go on.
"""

from __future__ import annotations

import ipaddress
import math
import time

from mailfleet.config import AuthSettings
from mailfleet.errors import TooManyAttempts
from mailfleet.storage.interfaces import Cache


def client_key(ip: str) -> str:
    """The client a per-IP budget belongs to: an IPv4 address (IPv4-mapped
    IPv6 included), the /64 of an IPv6 one, anything else as given."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    def __init__(self, cache: Cache, settings: AuthSettings) -> None:
        self.cache = cache
        self.settings = settings

    def _budgets(self, address: str, client_ip: str) -> list[tuple[str, int]]:
        """(key, failures allowed) of each budget an attempt counts against;
        an address that cannot be one (empty) has none of its own."""
        budgets = [(f"ip:{client_key(client_ip)}", self.settings.failed_logins_per_ip)]
        if address:
            budgets.insert(0, (f"address:{address}", self.settings.failed_logins_per_address))
        return budgets

    async def check(self, address: str, client_ip: str) -> None:
        """TooManyAttempts while the address or the client is locked.
        ``address`` is the account key tried (``mailbox_key``), or empty."""
        for key, _ in self._budgets(address, client_ip):
            locked_until = await self.cache.get(f"login:lock:{key}")
            if locked_until is None:
                continue
            left = int(locked_until) / 1000 - time.time()
            whose = "this address" if key.startswith("address:") else "your network address"
            raise TooManyAttempts(
                f"too many failed logins for {whose}; try again in {_duration(left)}",
                retry_after=max(1, math.ceil(left)),
            )

    async def failed(self, address: str, client_ip: str) -> None:
        """Counts a failed attempt against each budget; the one that spends
        a budget locks its address or client."""
        settings = self.settings
        for key, allowed in self._budgets(address, client_ip):
            failures, _ = await self.cache.incr(
                f"login:failures:{key}", settings.failed_login_window_seconds
            )
            # Exactly one failure, however many run at once, is the one that
            # spends the budget: one lock, counted once.
            if failures != allowed:
                continue
            locks, _ = await self.cache.incr(f"login:locks:{key}", settings.lockout_memory_seconds)
            seconds = min(
                settings.lockout_seconds * 2 ** min(locks - 1, 32), settings.max_lockout_seconds
            )
            until_ms = int((time.time() + seconds) * 1000)
            await self.cache.set(f"login:lock:{key}", str(until_ms).encode(), seconds)
            await self.cache.delete(f"login:failures:{key}")

    async def succeeded(self, address: str) -> None:
        """A right password, not locked: the address starts afresh."""
        for what in ("failures", "locks"):
            await self.cache.delete(f"login:{what}:address:{address}")


def _duration(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
