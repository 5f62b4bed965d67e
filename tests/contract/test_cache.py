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


def _now() -> float:
    return asyncio.get_running_loop().time()


# The implementations round times to milliseconds, and Redis's clock is not
# this loop's: bounds computed from measured times get this much slack.
SLACK = 0.05


async def _gone(cache: Cache, key: str, within: float = 10) -> float:
    """Waits until ``key`` is gone; answers when it was first seen gone."""
    deadline = _now() + within
    while await cache.get(key) is not None:
        assert _now() < deadline, f"{key} still there after {within} s"
        await asyncio.sleep(0.02)
    return _now()


async def test_a_value_expires_with_its_ttl(cache: Cache) -> None:
    # Measured, not slept: on a loaded machine a fixed sleep may end before
    # or long after the TTL (tests that bet on wall-clock time flake).
    started = _now()
    await cache.set("short", b"v", 0.5)
    await cache.set("long", b"v", 30)
    if _now() - started < 0.5 - SLACK:  # else the machine was too slow to see it live
        assert await cache.get("short") == b"v"
    gone_at = await _gone(cache, "short")
    assert gone_at - started >= 0.5 - SLACK  # not before its TTL
    assert await cache.get("long") == b"v"


async def test_incr_counts_and_keeps_its_first_ttl(cache: Cache) -> None:
    before = _now()
    count, left = await cache.incr("n", 10)
    assert count == 1 and 10 - (_now() - before) - SLACK <= left <= 10
    await asyncio.sleep(0.2)
    count, left = await cache.incr("n", 10)
    assert count == 2
    # Counted from the first increment (at least 0.2 s ago), not renewed.
    assert 10 - (_now() - before) - SLACK <= left <= 9.8 + SLACK
    assert (await cache.incr("m", 10))[0] == 1  # counters are per key


async def test_incr_after_expiry_starts_again_at_one(cache: Cache) -> None:
    started = _now()
    assert (await cache.incr("n", 0.5))[0] == 1
    second = (await cache.incr("n", 0.5))[0]
    if _now() - started < 0.5 - SLACK:  # else the first may be gone already
        assert second == 2
    # Past the TTL, however long the machine took to get here.
    await asyncio.sleep(max(0.0, started + 0.5 + SLACK - _now()))
    count, left = await cache.incr("n", 5)
    assert count == 1 and 4 < left <= 5
