"""Implementations of ``Queue`` for the contract suite, each built with
``POLICIES``: the suite's timings are written against them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.distributed.nats_queue import NatsQueue
from mailfleet.storage.embedded.sqlite_queue import SqliteQueue
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.interfaces import QueuePolicy
from tests.contract.backends import register
from tests.support.nats import require_nats, unique_prefix

# Long leases and windows where a test must not see them run out; ``brief``
# for the tests that wait for a lease or a dedupe window to end.
POLICIES = {
    "incoming": QueuePolicy(lease_seconds=30, max_deliveries=5, dedupe_window_seconds=60),
    "outgoing": QueuePolicy(lease_seconds=30, max_deliveries=5, dedupe_window_seconds=60),
    "brief": QueuePolicy(lease_seconds=0.3, max_deliveries=3, dedupe_window_seconds=0.5),
    "error": QueuePolicy(),
}


@register("queue", "embedded", "sqlite")
@asynccontextmanager
async def sqlite_queue(directory: Path) -> AsyncIterator[SqliteQueue]:
    queue = SqliteQueue(f"sqlite:///{directory / 'queue.sqlite'}", POLICIES)
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


@register("queue", "distributed", "nats")
@asynccontextmanager
async def nats_queue(directory: Path) -> AsyncIterator[NatsQueue]:
    server = await require_nats()
    queue = NatsQueue(f"{server}/?prefix={unique_prefix('q')}", POLICIES)
    await queue.open()
    try:
        yield queue
    finally:
        try:
            await asyncio.wait_for(queue.delete_streams(), 8)
        except (TimeoutError, BackendUnavailable):
            # nats-server 2.9 has been seen to leave JetStream's API
            # unanswered for tens of seconds after the delayed-put test
            # (reproduced only after another test of the file): delete the
            # streams at the end of the session instead of hanging here.
            LEFT_BEHIND.append((server, queue))
        finally:
            await queue.close()


# Queues whose streams could not be deleted at once (see above).
LEFT_BEHIND: list[tuple[str, NatsQueue]] = []


async def delete_left_behind() -> None:
    while LEFT_BEHIND:
        server, left = LEFT_BEHIND.pop()
        fresh = NatsQueue(f"{server}/?prefix={left.options.prefix}", POLICIES)
        await fresh.open()
        try:
            await asyncio.wait_for(fresh.delete_streams(), 30)
        finally:
            await fresh.close()
