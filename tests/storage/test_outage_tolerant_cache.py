"""The cache role while its Redis is unreachable (decision 0026): reads miss,
writes are dropped, counters let events through, and ``ping`` still says the
backend is down. A real RedisCache, pointed at a loopback port where no Redis
listens."""

from __future__ import annotations

import logging
import socket

import pytest

from mailfleet.storage.distributed.redis_cache import RedisCache
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.outage_tolerant_cache import OutageTolerantCache


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_cache_whose_redis_is_down_misses_and_counts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = RedisCache(f"redis://127.0.0.1:{closed_port()}/0?prefix=t")
    cache = OutageTolerantCache(down)
    await cache.open()
    try:
        with pytest.raises(BackendUnavailable):
            await down.get("k")  # what the service would have met
        with caplog.at_level(logging.ERROR, "mailfleet.storage.cache"):
            assert await cache.get("k") is None
            await cache.set("k", b"v", 10)
            await cache.delete("k")
            assert await cache.incr("rate:x", 60) == (1, 60)
            assert await cache.incr("rate:x", 60) == (1, 60)
        # One line for the outage, not one per call.
        assert len([r for r in caplog.records if "cache unavailable" in r.message]) == 1
        with pytest.raises(BackendUnavailable):
            await cache.ping()  # /readyz still tells
    finally:
        await cache.close()
