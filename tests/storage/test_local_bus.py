"""The local event bus's own behaviour beyond the contract: sockets of dead
processes are cleared, and long data directories still get short socket paths."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mailfleet.storage.embedded.local_bus import LocalEventBus, socket_directory


async def test_a_dead_process_socket_is_removed_by_the_next_publisher(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    publisher, listener = LocalEventBus(directory), LocalEventBus(directory)
    await publisher.open()
    await listener.open()
    # A process killed without closing its bus leaves its socket file behind.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale = socket_directory(directory) / "999999-dead.sock"
    dead.bind(str(stale))
    dead.close()
    try:
        watch = listener.watch(1)
        woken = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0)
        await publisher.publish({1: 1})
        assert await asyncio.wait_for(woken, 5) == 1
        assert not stale.exists()
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await publisher.close()
        await listener.close()


async def test_a_long_directory_gets_its_sockets_in_a_short_one(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "events"
    assert socket_directory(deep) != deep
    assert socket_directory(deep) == socket_directory(deep)
    one, two = LocalEventBus(deep), LocalEventBus(deep)
    await one.open()
    await two.open()
    try:
        watch = two.watch(5)
        woken = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0)
        await one.publish({5: 9})
        assert await asyncio.wait_for(woken, 5) == 9
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await one.close()
        await two.close()
