"""Fixed-window rate limits on the shared cache (in-process, later Redis: the
same INCR + EXPIRE)."""

from __future__ import annotations

import math

from mailfleet.errors import RateLimited
from mailfleet.storage.interfaces import Cache


class RateLimiter:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def hit(self, key: str, limit: int, window_seconds: float, what: str) -> None:
        """Counts one event; RateLimited once more than ``limit`` fall in the window."""
        count, left = await self.cache.incr(f"rate:{key}", window_seconds)
        if count > limit:
            raise RateLimited(
                f"too many {what}: {limit} per {int(window_seconds)} s; try again later",
                retry_after=max(1, math.ceil(left)),
            )
