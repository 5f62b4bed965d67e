"""Cache contract (``storage/interfaces.py``), run against every selected
``Cache`` implementation: values and counters that live for their TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.interfaces import Cache
from tests.contract import backends


@pytest.fixture(params=backends.params("cache"))
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cache]:
    async for opened in backends.opened(request.param, tmp_path):
        yield opened


async def test_get_set_delete(cache: Cache) -> None:
    await cache.ping()
    assert await cache.get("k") is None
    await cache.set("k", b"v1", 30)
    assert await cache.get("k") == b"v1"
    await cache.set("k", b"v2", 30)  # overwrites
    assert await cache.get("k") == b"v2"
    await cache.set("other", b"\x00\xff", 30)
    await cache.delete("k")
    assert await cache.get("k") is None
    assert await cache.get("other") == b"\x00\xff"
    await cache.delete("never-set")


async def test_a_value_expires_with_its_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", 0.3)
    await cache.set("long", b"v", 30)
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.4)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"


async def test_incr_counts_and_keeps_its_first_ttl(cache: Cache) -> None:
    count, left = await cache.incr("n", 10)
    assert count == 1 and 9 < left <= 10
    await asyncio.sleep(0.2)
    count, left = await cache.incr("n", 10)
    assert count == 2
    assert 9 < left <= 9.9  # counted from the first increment, not renewed
    assert (await cache.incr("m", 10))[0] == 1  # counters are per key


async def test_incr_after_expiry_starts_again_at_one(cache: Cache) -> None:
    assert (await cache.incr("n", 0.3))[0] == 1
    assert (await cache.incr("n", 0.3))[0] == 2
    await asyncio.sleep(0.4)
    count, left = await cache.incr("n", 5)
    assert count == 1 and 4 < left <= 5
