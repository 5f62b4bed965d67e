"""In-process cache: the embedded stand-in for Redis, shared by every role of
the one ``mailfleet serve`` process."""

from __future__ import annotations

import time
from collections import OrderedDict


class MemoryCache:
    """LRU with per-key expiry. Lives as long as the process: ``open`` and
    ``close`` have nothing to do, ``close`` forgets every key."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, bytes | int]] = OrderedDict()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
        pass

    def _live(self, key: str) -> tuple[float, bytes | int] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def _store(self, key: str, expires: float, value: bytes | int) -> None:
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return entry[1] if entry and isinstance(entry[1], bytes) else None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._store(key, time.monotonic() + ttl_seconds, value)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl_seconds: float) -> tuple[int, float]:
        now = time.monotonic()
        entry = self._live(key)
        if entry is None or not isinstance(entry[1], int):
            expires, count = now + ttl_seconds, 1
        else:
            expires, count = entry[0], entry[1] + 1
        self._store(key, expires, count)
        return count, expires - now
