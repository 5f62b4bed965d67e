"""Event bus implementations. A factory yields a function that opens one more
bus on the same medium: each stands for another process (the local bus sends
between them over its sockets even inside one process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.distributed.redis_events import RedisEventBus
from mailfleet.storage.embedded.local_bus import LocalEventBus
from mailfleet.storage.interfaces import EventBus
from tests.support.redis import require_redis, unique_prefix, with_prefix

from ..backends import register

OpenBus = Callable[[], Awaitable[EventBus]]


@register("events", "embedded", "local")
@asynccontextmanager
async def local_bus(directory: Path) -> AsyncIterator[OpenBus]:
    opened: list[EventBus] = []

    async def open_bus() -> EventBus:
        bus = LocalEventBus(directory / "events")
        await bus.open()
        opened.append(bus)
        return bus

    try:
        yield open_bus
    finally:
        for bus in opened:
            await bus.close()


@register("events", "distributed", "redis")
@asynccontextmanager
async def redis_bus(directory: Path) -> AsyncIterator[OpenBus]:
    server = await require_redis()
    url = with_prefix(server, unique_prefix("e"))
    opened: list[EventBus] = []

    async def open_bus() -> EventBus:
        bus = RedisEventBus(url)
        await bus.open()
        opened.append(bus)
        return bus

    try:
        yield open_bus
    finally:
        for bus in opened:
            await bus.close()
