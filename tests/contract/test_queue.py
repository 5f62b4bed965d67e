"""Queue contract (``storage/interfaces.py``, decision 0009), run against every
selected ``Queue`` implementation: at-least-once leases for the queue's lease
length, attempts counted per delivery, retries with delay, delayed puts, max
deliveries then ``error`` with the reason, dead letters that replay, dedupe
within a window, and the blocking fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.interfaces import Queue
from tests.contract import backends
from tests.contract.implementations.queue import POLICIES


@pytest.fixture(params=backends.params("queue"))
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    async for opened in backends.opened(request.param, tmp_path):
        yield opened


def _elapsed(since: float) -> float:
    return asyncio.get_running_loop().time() - since


def _now() -> float:
    return asyncio.get_running_loop().time()


async def test_policy_is_the_queue_s_own(queue: Queue) -> None:
    assert queue.policy("brief") == POLICIES["brief"]
    assert queue.policy("incoming") == POLICIES["incoming"]


async def test_put_fetch_ack(queue: Queue) -> None:
    first = await queue.put("incoming", {"n": 1})
    await queue.put("incoming", {"n": 2})
    await queue.put("outgoing", {"n": 3})
    items = await queue.fetch("incoming", limit=10, timeout=1)
    assert [i.payload["n"] for i in items] == [1, 2]
    assert items[0].id == first
    assert all(i.attempts == 1 and i.queue == "incoming" for i in items)
    assert all(i.last_error == "" and i.origin == "" for i in items)
    # Fetched items are held for their consumer until the lease runs out.
    assert await queue.fetch("incoming", limit=10, timeout=0) == []
    assert (await queue.stats("incoming")).depth == 2  # leased items count
    await queue.ack(items[0])
    assert (await queue.stats("incoming")).depth == 1
    assert await queue.get("incoming", first) is None
    await queue.ack_many([items[1]])
    await queue.ack_many([])
    assert (await queue.stats("incoming")).depth == 0


async def test_fetch_returns_at_most_limit_oldest_first(queue: Queue) -> None:
    ids = [await queue.put("incoming", {"n": n}) for n in range(5)]
    first = await queue.fetch("incoming", limit=3, timeout=0)
    rest = await queue.fetch("incoming", limit=3, timeout=0)
    assert [i.id for i in first + rest] == ids
    await queue.ack_many(first + rest)
    assert (await queue.stats("incoming")).depth == 0


async def test_queues_are_independent(queue: Queue) -> None:
    await queue.put("incoming", {"n": 1}, dedupe_key="k")
    assert await queue.fetch("outgoing", limit=10, timeout=0.2) == []
    other = await queue.put("outgoing", {"n": 2}, dedupe_key="k")  # keys are per queue
    (item,) = await queue.fetch("outgoing", limit=10, timeout=0)
    assert item.id == other
    assert await queue.purge("outgoing") == 1
    assert (await queue.stats("incoming")).depth == 1


# A fetch's timeout far longer than any stall of a loaded machine: a fetch
# that returns well before it was woken by something else.
LONG_FETCH = 60


async def test_fetch_blocks_until_a_put_arrives(queue: Queue) -> None:
    waiter = asyncio.create_task(queue.fetch("incoming", limit=10, timeout=LONG_FETCH))
    await asyncio.sleep(0.1)  # let it start waiting: the put must wake it, not precede it
    assert not waiter.done()
    put = await queue.put("incoming", {"n": 9})
    (item,) = await asyncio.wait_for(waiter, LONG_FETCH / 2)
    assert item.id == put  # woken by the put: its timeout is still far off


async def test_fetch_returns_nothing_after_its_timeout(queue: Queue) -> None:
    started = _now()
    assert await queue.fetch("incoming", limit=10, timeout=0.3) == []
    assert _elapsed(started) >= 0.25  # it waited (how much longer is the machine's load)


async def test_lease_expiry_redelivers_with_attempts_plus_one(queue: Queue) -> None:
    put = await queue.put("brief", {"n": 1})
    (item,) = await queue.fetch("brief", limit=1, timeout=0)
    assert item.attempts == 1
    assert await queue.fetch("brief", limit=1, timeout=0) == []
    (again,) = await queue.fetch("brief", limit=1, timeout=10)  # waits for the lease to end
    assert (again.id, again.attempts, again.payload) == (put, 2, {"n": 1})
    assert again.enqueued_at == item.enqueued_at


async def test_retry_with_delay(queue: Queue) -> None:
    await queue.put("outgoing", {"n": 1})
    (item,) = await queue.fetch("outgoing", limit=1, timeout=0)
    started = _now()
    await queue.retry(item, delay_seconds=0.4)
    assert await queue.fetch("outgoing", limit=1, timeout=0) == []
    (again,) = await queue.fetch("outgoing", limit=1, timeout=10)
    assert _elapsed(started) >= 0.35
    assert (again.id, again.attempts) == (item.id, 2)
    assert again.last_error == ""  # a retry keeps no reason


async def test_delayed_put_is_not_delivered_before_its_time(queue: Queue) -> None:
    started = _now()
    put = await queue.put("outgoing", {"n": 1}, delay_seconds=0.4)
    assert await queue.fetch("outgoing", limit=1, timeout=0) == []
    assert (await queue.stats("outgoing")).depth == 1
    (item,) = await queue.fetch("outgoing", limit=1, timeout=10)
    assert _elapsed(started) >= 0.35
    assert (item.id, item.attempts) == (put, 1)  # the wait was no delivery


async def test_max_deliveries_then_error_with_the_reason(queue: Queue) -> None:
    limit = POLICIES["brief"].max_deliveries
    put = await queue.put("brief", {"n": 1})
    for attempt in range(1, limit + 1):
        (item,) = await queue.fetch("brief", limit=1, timeout=10)
        assert item.attempts == attempt  # then the lease runs out
    # Once the last lease has run out the item goes to error: no delivery
    # more, however long that takes here (mostly one fetch: each is a
    # request JetStream must answer).
    deadline = _now() + 20
    while not await queue.list("error"):
        assert _now() < deadline, "never moved to error"
        wait = POLICIES["brief"].lease_seconds * 3
        assert await queue.fetch("brief", limit=1, timeout=wait) == []
    assert await queue.fetch("brief", limit=1, timeout=0) == []
    assert (await queue.stats("brief")).depth == 0
    (failed,) = await queue.list("error")
    assert (failed.id, failed.origin, failed.payload) == (put, "brief", {"n": 1})
    assert f"gave up after {limit} deliveries" in failed.last_error
    assert "lease expired" in failed.last_error


async def test_a_retry_past_max_deliveries_goes_to_error(queue: Queue) -> None:
    limit = POLICIES["outgoing"].max_deliveries
    await queue.put("outgoing", {"n": 1})
    for attempt in range(1, limit + 1):
        (item,) = await queue.fetch("outgoing", limit=1, timeout=10)
        assert item.attempts == attempt
        await queue.retry(item, delay_seconds=0)
    assert await queue.fetch("outgoing", limit=1, timeout=0.2) == []
    (failed,) = await queue.list("error")
    assert failed.origin == "outgoing"
    assert f"gave up after {limit} deliveries" in failed.last_error


async def test_dead_letter_keeps_payload_and_reason_and_replays(queue: Queue) -> None:
    put = await queue.put("incoming", {"n": 1, "text": "grüße"}, dedupe_key="mail-1")
    (item,) = await queue.fetch("incoming", limit=1, timeout=0)
    await queue.dead_letter(item, error="cannot parse")
    assert (await queue.stats("incoming")).depth == 0
    (failed,) = await queue.list("error")
    assert (failed.id, failed.origin, failed.last_error) == (put, "incoming", "cannot parse")
    assert failed.payload == {"n": 1, "text": "grüße"}
    assert failed.enqueued_at == item.enqueued_at
    assert await queue.get("error", failed.id) == failed
    # Back on its origin, within the dedupe window of its first put: a
    # replay is never deduped.
    assert await queue.replay(failed.id) is True
    assert await queue.list("error") == []
    (back,) = await queue.fetch("incoming", limit=1, timeout=1)
    assert (back.id, back.payload, back.attempts) == (put, failed.payload, 1)
    assert (back.last_error, back.origin, back.enqueued_at) == ("", "", item.enqueued_at)
    assert await queue.replay("no-such-id") is False


async def test_dedupe_within_the_window_answers_the_first_id(queue: Queue) -> None:
    a = await queue.put("outgoing", {"n": 1}, dedupe_key="msg1:example.org")
    b = await queue.put("outgoing", {"n": 2}, dedupe_key="msg1:example.org")
    assert a == b
    assert (await queue.stats("outgoing")).depth == 1
    # Whether or not the first item is still there.
    (item,) = await queue.fetch("outgoing", limit=1, timeout=0)
    assert item.payload == {"n": 1}
    await queue.ack(item)
    assert await queue.put("outgoing", {"n": 3}, dedupe_key="msg1:example.org") == a
    assert (await queue.stats("outgoing")).depth == 0


async def test_dedupe_ends_with_the_window(queue: Queue) -> None:
    a = await queue.put("brief", {"n": 1}, dedupe_key="k")
    await asyncio.sleep(POLICIES["brief"].dedupe_window_seconds + 0.1)
    b = await queue.put("brief", {"n": 2}, dedupe_key="k")
    assert a != b
    assert (await queue.stats("brief")).depth == 2
    assert await queue.put("brief", {"n": 3}, dedupe_key="k") == b


async def test_retry_now_makes_a_waiting_item_due_under_a_new_id(queue: Queue) -> None:
    put = await queue.put("outgoing", {"n": 1})
    (item,) = await queue.fetch("outgoing", limit=1, timeout=0)
    await queue.retry(item, delay_seconds=3600)
    assert await queue.fetch("outgoing", limit=1, timeout=0) == []
    again = await queue.retry_now("outgoing", put)
    assert again is not None and again != put
    assert await queue.get("outgoing", put) is None
    (copy,) = await queue.fetch("outgoing", limit=1, timeout=1)
    assert (copy.id, copy.payload, copy.attempts) == (again, {"n": 1}, 1)
    assert copy.enqueued_at == item.enqueued_at
    assert await queue.retry_now("outgoing", "no-such-id") is None


async def test_remove_purge_and_stats(queue: Queue) -> None:
    for n in range(3):
        await queue.put("outgoing", {"n": n})
    await asyncio.sleep(0.05)
    stats = await queue.stats("outgoing")
    assert stats.depth == 3 and stats.oldest_age_seconds > 0
    items = await queue.list("outgoing")
    assert [i.payload["n"] for i in items] == [0, 1, 2]
    assert await queue.get("outgoing", items[1].id) == items[1]
    assert await queue.remove("outgoing", items[0].id) is True
    assert await queue.remove("outgoing", items[0].id) is False
    (leased,) = await queue.fetch("outgoing", limit=1, timeout=0)
    assert await queue.remove("outgoing", leased.id) is True  # leased or not
    assert await queue.purge("outgoing") == 1
    assert await queue.purge("outgoing") == 0
    stats = await queue.stats("outgoing")
    assert (stats.depth, stats.oldest_age_seconds) == (0, 0.0)


async def test_concurrent_consumers_never_share_a_leased_item(queue: Queue) -> None:
    ids = {await queue.put("incoming", {"n": n}) for n in range(60)}
    seen: list[list[str]] = [[] for _ in range(4)]

    async def consume(mine: list[str]) -> None:
        while batch := await queue.fetch("incoming", limit=7, timeout=0.2):
            mine.extend(i.id for i in batch)
            await asyncio.sleep(0)  # hold them while the others fetch

    await asyncio.gather(*(consume(mine) for mine in seen))
    taken = [item_id for mine in seen for item_id in mine]
    assert len(taken) == len(set(taken)) == len(ids)
    assert set(taken) == ids
