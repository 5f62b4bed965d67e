"""EventBus contract: a wake-up published by one process reaches the watchers
of that account in every other process (and its own) at once; wake-ups not
read yet coalesce into the newest; other accounts' wake-ups are not seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.interfaces import EventBus

from . import backends
from .implementations.events import OpenBus


@pytest.fixture(params=backends.params("events"))
async def open_bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenBus]:
    async with request.param.open(tmp_path) as opened:
        yield opened


async def next_head(bus: EventBus, account_id: int, started: asyncio.Event) -> int:
    watch = bus.watch(account_id)
    try:
        waiting = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0)  # the watch is registered once the generator runs
        started.set()
        return await asyncio.wait_for(waiting, 5)
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_a_wake_up_reaches_another_process_at_once(open_bus: OpenBus) -> None:
    publisher, listener = await open_bus(), await open_bus()
    started = asyncio.Event()
    task = asyncio.create_task(next_head(listener, 7, started))
    await started.wait()
    t0 = time.perf_counter()
    await publisher.publish({8: 99, 7: 3})
    assert await task == 3
    # Pushed, never polled for (no implementation has a poll to fall back
    # on): a bound far above any push, so that a loaded machine does not
    # fail it, and far below the 5 s the watcher would wait.
    assert time.perf_counter() - t0 < 2


async def test_the_publishing_process_hears_itself(open_bus: OpenBus) -> None:
    bus = await open_bus()
    started = asyncio.Event()
    task = asyncio.create_task(next_head(bus, 7, started))
    await started.wait()
    await bus.publish({7: 5})
    assert await task == 5


async def test_unread_wake_ups_coalesce_into_the_newest(open_bus: OpenBus) -> None:
    publisher, listener = await open_bus(), await open_bus()
    watch = listener.watch(1)
    first = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    await publisher.publish({1: 1})
    assert await asyncio.wait_for(first, 5) == 1
    other = listener.watch(2)
    later = asyncio.ensure_future(anext(other))
    await asyncio.sleep(0)
    for head in (2, 3, 4):
        await publisher.publish({1: head})
    await publisher.publish({2: 50})
    # Account 2's wake-up, published last, has arrived: so have account 1's
    # (a sleep here only hoped so).
    assert await asyncio.wait_for(later, 5) == 50
    await other.aclose()  # type: ignore[attr-defined]
    assert await asyncio.wait_for(anext(watch), 5) == 4
    # The same from within the listener's own process.
    for head in (5, 6, 7):
        await listener.publish({1: head})
    assert await asyncio.wait_for(anext(watch), 5) == 7
    await watch.aclose()  # type: ignore[attr-defined]


async def test_a_wake_callback_hears_each_process_until_it_is_removed(
    open_bus: OpenBus,
) -> None:
    publisher, listener = await open_bus(), await open_bus()
    heard: list[tuple[int, int]] = []
    arrived = asyncio.Event()

    def on_seven(head: int) -> None:
        heard.append((7, head))

    def on_nine(head: int) -> None:
        heard.append((9, head))
        arrived.set()

    listener.on_wake(7, on_seven)
    listener.on_wake(9, on_nine)
    await publisher.publish({8: 99, 7: 3})
    await listener.publish({7: 4})
    await publisher.publish({9: 1})
    await asyncio.wait_for(arrived.wait(), 5)
    assert sorted(heard) == [(7, 3), (7, 4), (9, 1)]

    # Removed: a later wake-up of the account reaches it no more (the one of
    # account 9 published after it has arrived, and wake-ups keep their order).
    listener.off_wake(7, on_seven)
    arrived.clear()
    await publisher.publish({7: 5})
    await publisher.publish({9: 2})
    await asyncio.wait_for(arrived.wait(), 5)
    assert sorted(heard) == [(7, 3), (7, 4), (9, 1), (9, 2)]
    listener.off_wake(9, on_nine)
    listener.off_wake(9, on_nine)  # a second removal does nothing


async def test_a_revocation_is_in_every_process_when_publish_returns(open_bus: OpenBus) -> None:
    publisher, listener, bystander = await open_bus(), await open_bus(), await open_bus()
    heard: dict[str, list[int]] = {"publisher": [], "listener": [], "bystander": []}
    publisher.on_revoked(heard["publisher"].append)
    listener.on_revoked(heard["listener"].append)
    bystander.on_revoked(heard["bystander"].append)

    await publisher.publish_revoked([42, 7, 42])
    # No await in between: catch_up reads what has already arrived.
    listener.catch_up()
    assert sorted(heard["listener"]) == [7, 42]
    assert sorted(heard["publisher"]) == [7, 42]
    # A process that does not catch up hears it by itself, soon.
    deadline = asyncio.get_running_loop().time() + 5
    while sorted(heard["bystander"]) != [7, 42]:
        assert asyncio.get_running_loop().time() < deadline, heard["bystander"]
        await asyncio.sleep(0.01)


async def test_revocations_are_not_dropped_when_a_process_is_behind(open_bus: OpenBus) -> None:
    """Wake-ups may be dropped when a reader's buffer is full; revocations
    wait for room instead."""
    publisher, listener = await open_bus(), await open_bus()
    heard: list[int] = []
    listener.on_revoked(heard.append)
    # The listener reads only when the publisher waits: its receive queue
    # fills after a few hundred of these, and a dropped one would be missing.
    for n in range(1, 3001):
        await publisher.publish_revoked([n])
    listener.catch_up()
    assert heard == list(range(1, 3001))


async def test_the_newest_head_arrives_even_when_a_process_is_behind(open_bus: OpenBus) -> None:
    """A listener that is not reading while many accounts change (its queue
    holds ten datagrams on Linux by default) still hears every account's
    newest head once it reads again: wake-ups may merge, not vanish."""
    publisher, listener = await open_bus(), await open_bus()
    accounts = range(1, 201)
    watches = {a: listener.watch(a) for a in accounts}
    nexts = {a: asyncio.ensure_future(anext(w)) for a, w in watches.items()}
    await asyncio.sleep(0.01)  # every watch registered
    for head in (1, 2):
        for a in accounts:  # no await that yields: the listener reads nothing meanwhile
            await publisher.publish({a: head})
    heads = await asyncio.wait_for(asyncio.gather(*nexts.values()), 5)
    assert all(h >= 1 for h in heads)
    # The latest of each arrives too (coalesced into one wake-up or two).
    for a, watch in watches.items():
        head = heads[a - 1]
        while head < 2:
            head = await asyncio.wait_for(anext(watch), 5)
        await watch.aclose()  # type: ignore[attr-defined]
