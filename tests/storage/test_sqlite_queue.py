"""What only the SQLite queue does beyond the contract (tests/contract/
test_queue.py): fetchers in one process woken by another process's commits,
and queue files of the first layout carried over."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from mailfleet.ids import now_ms
from mailfleet.storage.embedded.sqlite_queue import WATCH_INTERVAL_IDLE, SqliteQueue
from mailfleet.storage.interfaces import QueuePolicy


async def test_a_put_through_another_connection_wakes_a_fetch(tmp_path: Path) -> None:
    """Counted in the consumer's looks at the change counter, not in
    seconds: a loaded machine makes each look late, never more of them."""
    url = f"sqlite:///{tmp_path / 'queue.sqlite'}"
    consumer, producer = SqliteQueue(url), SqliteQueue(url)
    await consumer.open()
    await producer.open()
    looks = 0
    look = consumer._data_version

    def counted() -> int:
        nonlocal looks
        looks += 1
        return look()

    consumer._data_version = counted  # type: ignore[method-assign]
    try:
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(consumer.fetch("incoming", limit=64, timeout=60))
        # The watch backs off to its idle interval while nothing changes.
        deadline = loop.time() + 10
        while consumer._interval < WATCH_INTERVAL_IDLE:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        put = await producer.put("incoming", {"n": 1})
        seen = looks
        (item,) = await asyncio.wait_for(waiter, 30)
        assert item.id == put
        # The first look after the commit wakes the fetch (one more may
        # have started while the put was committing).
        assert looks - seen <= 2, looks - seen
        # A delayed put by the other process: woken when it comes due, not
        # before, and long before the fetch's own timeout.
        waiter = asyncio.create_task(consumer.fetch("incoming", limit=64, timeout=60))
        await asyncio.sleep(0.1)
        started = loop.time()
        await producer.put("incoming", {"n": 2}, delay_seconds=0.3)
        (item,) = await asyncio.wait_for(waiter, 30)
        assert loop.time() - started >= 0.25
    finally:
        await producer.close()
        await consumer.close()


async def test_first_layout_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    now = now_ms()
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE queue_items (queue TEXT, id TEXT, payload TEXT, dedupe_key TEXT,
            attempts INTEGER, enqueued_at BIGINT, not_before BIGINT, last_error TEXT,
            origin TEXT, PRIMARY KEY (queue, id), UNIQUE (queue, dedupe_key));
        CREATE INDEX ix_queue_ready ON queue_items (queue, not_before);
        """
    )
    conn.executemany(
        "INSERT INTO queue_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("outgoing", "a", json.dumps({"n": 1}), "m:d", 2, now, now, "451 later", ""),
            ("error", "b", json.dumps({"n": 2}), None, 1, now, now, "cannot parse", "incoming"),
        ],
    )
    conn.commit()
    conn.close()
    queue = SqliteQueue(f"sqlite:///{path}", {"outgoing": QueuePolicy(dedupe_window_seconds=60)})
    await queue.open()
    try:
        (live,) = await queue.list("outgoing")
        assert (live.id, live.attempts, live.last_error) == ("a", 2, "")
        (failed,) = await queue.list("error")
        assert (failed.last_error, failed.origin) == ("cannot parse", "incoming")
        assert await queue.put("outgoing", {"n": 3}, dedupe_key="m:d") == "a"
        (item,) = await queue.fetch("outgoing", limit=10, timeout=0)
        assert item.attempts == 3
    finally:
        await queue.close()
