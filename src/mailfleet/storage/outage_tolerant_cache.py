"""The cache role through an outage of its backend (Redis): the service
slows, never stops (issue 14).

Everything the cache holds can be had again or done without: recent mail and
recipients are read from the metadata store instead (a read is a miss), a
write that does not land is a value not kept, and a rate-limit or
login-failure counter that cannot be counted lets the event through (a
counter answers 1). That last one is the choice of failing open: while the
cache is down, limits do not hold, in exchange for mail and logins going on;
the outage is logged (once a ``LOG_EVERY_SECONDS``), and ``ping`` still
fails, so ``/readyz`` and the operators see it (decision 0026)."""

from __future__ import annotations

import logging
import time

from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.interfaces import Cache

log = logging.getLogger("mailfleet.storage.cache")

LOG_EVERY_SECONDS = 10.0


class OutageTolerantCache:
    def __init__(self, inner: Cache) -> None:
        self.inner = inner
        self._logged_at = float("-inf")

    def _outage(self, exc: BackendUnavailable) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            log.error("cache unavailable, going on without it (limits not counted): %s", exc)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.inner.get(key)
        except BackendUnavailable as exc:
            self._outage(exc)
            return None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        try:
            await self.inner.set(key, value, ttl_seconds)
        except BackendUnavailable as exc:
            self._outage(exc)

    async def delete(self, key: str) -> None:
        try:
            await self.inner.delete(key)
        except BackendUnavailable as exc:
            self._outage(exc)

    async def incr(self, key: str, ttl_seconds: float) -> tuple[int, float]:
        try:
            return await self.inner.incr(key, ttl_seconds)
        except BackendUnavailable as exc:
            self._outage(exc)
            return 1, ttl_seconds
