"""Queue contract: at-least-once leases, retries with delay, dead letters that
can be replayed, dedupe keys. Runs against every Queue implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.embedded.sqlite_queue import SqliteQueue
from mailfleet.storage.interfaces import Queue


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[Queue]:
    q = SqliteQueue(f"sqlite:///{tmp_path / 'queue.sqlite'}")
    await q.open()
    yield q
    await q.close()


async def test_put_lease_ack(queue: Queue) -> None:
    first = await queue.put("incoming", {"n": 1})
    await queue.put("incoming", {"n": 2})
    await queue.put("outgoing", {"n": 3})
    items = await queue.lease("incoming", limit=10, lease_seconds=30)
    assert [i.payload["n"] for i in items] == [1, 2]
    assert items[0].id == first
    assert all(i.attempts == 1 for i in items)
    # Leased items are invisible to other consumers until the lease runs out.
    assert await queue.lease("incoming", limit=10, lease_seconds=30) == []
    await queue.ack(items[0])
    assert (await queue.stats("incoming")).depth == 1
    assert (await queue.stats("outgoing")).depth == 1


async def test_lease_expiry_redelivers(queue: Queue) -> None:
    await queue.put("incoming", {"n": 1})
    (item,) = await queue.lease("incoming", limit=1, lease_seconds=0.2)
    await asyncio.sleep(0.3)
    (again,) = await queue.lease("incoming", limit=1, lease_seconds=30)
    assert again.id == item.id
    assert again.attempts == 2


async def test_retry_with_delay(queue: Queue) -> None:
    await queue.put("outgoing", {"n": 1})
    (item,) = await queue.lease("outgoing", limit=1, lease_seconds=30)
    await queue.retry(item, delay_seconds=0.3, error="451 try later")
    assert await queue.lease("outgoing", limit=1, lease_seconds=30) == []
    await asyncio.sleep(0.4)
    (again,) = await queue.lease("outgoing", limit=1, lease_seconds=30)
    assert again.last_error == "451 try later"
    assert again.attempts == 2


async def test_dead_letter_and_replay(queue: Queue) -> None:
    await queue.put("incoming", {"n": 1})
    (item,) = await queue.lease("incoming", limit=1, lease_seconds=30)
    await queue.dead_letter(item, error="cannot parse")
    assert (await queue.stats("incoming")).depth == 0
    (failed,) = await queue.list("error")
    assert failed.origin == "incoming"
    assert failed.last_error == "cannot parse"
    assert failed.payload == {"n": 1}
    assert await queue.get("error", failed.id) == failed
    assert await queue.replay(failed.id) is True
    assert await queue.list("error") == []
    (back,) = await queue.lease("incoming", limit=1, lease_seconds=30)
    assert back.payload == {"n": 1}
    assert await queue.replay("no-such-id") is False


async def test_dedupe_key(queue: Queue) -> None:
    a = await queue.put("outgoing", {"n": 1}, dedupe_key="msg1:example.org")
    b = await queue.put("outgoing", {"n": 2}, dedupe_key="msg1:example.org")
    assert a == b
    assert (await queue.stats("outgoing")).depth == 1


async def test_remove_purge_and_wait(queue: Queue) -> None:
    for n in range(3):
        await queue.put("outgoing", {"n": n})
    items = await queue.list("outgoing")
    assert await queue.remove("outgoing", items[0].id) is True
    assert await queue.remove("outgoing", items[0].id) is False
    assert await queue.purge("outgoing") == 2
    stats = await queue.stats("outgoing")
    assert (stats.depth, stats.oldest_age_seconds) == (0, 0.0)

    waiter = asyncio.create_task(queue.wait("incoming", timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await queue.put("incoming", {"n": 9})
    await asyncio.wait_for(waiter, 1)


async def test_wait_wakes_when_a_delayed_item_comes_due(queue: Queue) -> None:
    loop = asyncio.get_running_loop()
    await queue.put("outgoing", {"n": 1}, delay_seconds=0.3)
    await queue.wait("outgoing", 0)  # the put's own wake-up is not for now
    started = loop.time()
    await queue.wait("outgoing", 5)
    assert 0.2 <= loop.time() - started < 1.0
    (item,) = await queue.lease("outgoing", limit=10, lease_seconds=30)

    await queue.retry(item, delay_seconds=0.3, error="451 later")
    started = loop.time()
    await queue.wait("outgoing", 5)
    assert 0.2 <= loop.time() - started < 1.0
    assert len(await queue.lease("outgoing", limit=10, lease_seconds=30)) == 1
