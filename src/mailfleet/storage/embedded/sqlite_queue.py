"""Durable queues in their own SQLite file (the embedded stand-in for NATS
JetStream work-queue streams).

An item is leased by pushing its ``not_before`` past the lease; if the consumer
dies the item simply becomes visible again, so delivery is at-least-once and
consumers are idempotent. ``dead_letter`` moves an item to ``error`` with its
reason and its queue of origin, from where ``replay`` puts it back.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from typing import Any

import sqlalchemy as sa

from mailfleet.ids import now_ms
from mailfleet.storage.embedded.sqlite import create_sqlite_engines, sqlite_path
from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.interfaces import QueueItem, QueueStats
from mailfleet.storage.sql.transaction import Transaction

ERROR_QUEUE = "error"
# Seconds between looks at the change counter while waiting: the shortest
# while commits keep coming (mail flowing), doubling up to the longest while
# nothing changes, so an idle server does not wake 200 times a second.
WATCH_INTERVAL = 0.005
WATCH_INTERVAL_IDLE = 0.05

_metadata = sa.MetaData()
items = sa.Table(
    "queue_items",
    _metadata,
    sa.Column("queue", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("dedupe_key", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("enqueued_at", sa.BigInteger, nullable=False),
    sa.Column("not_before", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.UniqueConstraint("queue", "dedupe_key", name="uq_queue_dedupe"),
    sa.Index("ix_queue_ready", "queue", "not_before"),
)


def _item(row: Any) -> QueueItem:
    return QueueItem(
        queue=row.queue,
        id=row.id,
        payload=json.loads(row.payload),
        attempts=row.attempts,
        enqueued_at=row.enqueued_at,
        not_before=row.not_before,
        last_error=row.last_error,
        origin=row.origin,
    )


class SqliteQueue:
    def __init__(self, url: str) -> None:
        path = sqlite_path(url)
        # Writes go through one thread with a plain connection: puts from
        # concurrent SMTP sessions and acks from workers share commits.
        self._writer = SqliteWriter(path)
        self.schema_engine, self.reader = create_sqlite_engines(path, readers=2)
        self._signals: dict[str, asyncio.Event] = {}
        self._path = path
        self._watch: sqlite3.Connection | None = None
        self._interval = WATCH_INTERVAL

    async def open(self) -> None:
        async with Transaction(self.schema_engine, write=True) as conn:
            await conn.run_sync(_metadata.create_all)
        await self.schema_engine.dispose()
        self._writer.start()
        # Puts from other processes (an MX beside a worker-in process) wake
        # ``wait`` through the database's change counter.
        self._watch = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

    async def close(self) -> None:
        await self._writer.stop()
        await self.reader.dispose()
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _data_version(self) -> int:
        """Changes whenever another connection (any process) commits."""
        if self._watch is None:
            return 0
        try:
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return 0

    async def ping(self) -> None:
        async with Transaction(self.reader, write=False) as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _signal(self, queue: str) -> asyncio.Event:
        return self._signals.setdefault(queue, asyncio.Event())

    def _wake(self, queue: str, after_seconds: float) -> None:
        """Wakes this process's waiters on ``queue`` when an item becomes
        ready: now, or when a delayed put or a retry comes due (waiters in
        other processes see it at their timeout)."""
        if after_seconds <= 0:
            self._signal(queue).set()
        else:
            asyncio.get_running_loop().call_later(after_seconds, self._signal(queue).set)

    async def put(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        delay_seconds: float = 0,
    ) -> str:
        now = now_ms()
        item_id = f"{now:013x}{secrets.token_hex(6)}"
        body = json.dumps(payload)

        def insert(conn: sqlite3.Connection) -> str:
            if dedupe_key is not None:
                row = conn.execute(
                    "SELECT id FROM queue_items WHERE queue = ? AND dedupe_key = ?",
                    (queue, dedupe_key),
                ).fetchone()
                if row is not None:
                    return str(row[0])
            conn.execute(
                "INSERT INTO queue_items (queue, id, payload, dedupe_key, attempts,"
                " enqueued_at, not_before, last_error, origin)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, '', '')",
                (queue, item_id, body, dedupe_key, now, now + int(delay_seconds * 1000)),
            )
            return item_id

        stored = await self._writer.run(insert)
        self._wake(queue, delay_seconds)
        return stored

    async def lease(self, queue: str, *, limit: int, lease_seconds: float) -> list[QueueItem]:
        def take(conn: sqlite3.Connection) -> list[QueueItem]:
            now = now_ms()
            until = now + int(lease_seconds * 1000)
            rows = conn.execute(
                "SELECT id, payload, attempts, enqueued_at, last_error, origin FROM queue_items"
                " WHERE queue = ? AND not_before <= ? ORDER BY not_before LIMIT ?",
                (queue, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE queue_items SET not_before = ?, attempts = attempts + 1"
                " WHERE queue = ? AND id = ?",
                [(until, queue, r[0]) for r in rows],
            )
            return [
                QueueItem(queue, r[0], json.loads(r[1]), r[2] + 1, r[3], until, r[4], r[5])
                for r in rows
            ]

        return await self._writer.run(take)

    async def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        def change(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self._writer.run(change)

    async def ack(self, item: QueueItem) -> None:
        await self.remove(item.queue, item.id)

    async def retry(self, item: QueueItem, *, delay_seconds: float, error: str) -> None:
        await self._change(
            "UPDATE queue_items SET not_before = ?, last_error = ? WHERE queue = ? AND id = ?",
            (now_ms() + int(delay_seconds * 1000), error, item.queue, item.id),
        )
        self._wake(item.queue, delay_seconds)

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        await self._change(
            "UPDATE queue_items SET queue = ?, origin = ?, last_error = ?, not_before = ?,"
            " dedupe_key = NULL WHERE queue = ? AND id = ?",
            (ERROR_QUEUE, item.queue, error, now_ms(), item.queue, item.id),
        )

    async def list(self, queue: str, *, limit: int = 100) -> list[QueueItem]:
        async with Transaction(self.reader, write=False) as conn:
            rows = await conn.execute(
                items.select()
                .where(items.c.queue == queue)
                .order_by(items.c.enqueued_at, items.c.id)
                .limit(limit)
            )
            return [_item(r) for r in rows]

    async def get(self, queue: str, item_id: str) -> QueueItem | None:
        async with Transaction(self.reader, write=False) as conn:
            row = (
                await conn.execute(
                    items.select().where(items.c.queue == queue, items.c.id == item_id)
                )
            ).first()
        return _item(row) if row else None

    async def replay(self, item_id: str) -> bool:
        def back(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT origin FROM queue_items WHERE queue = ? AND id = ?", (ERROR_QUEUE, item_id)
            ).fetchone()
            if row is None or not row[0]:
                return None
            conn.execute(
                "UPDATE queue_items SET queue = ?, origin = '', attempts = 0, not_before = ?"
                " WHERE queue = ? AND id = ?",
                (row[0], now_ms(), ERROR_QUEUE, item_id),
            )
            return str(row[0])

        origin = await self._writer.run(back)
        if origin is None:
            return False
        self._signal(origin).set()
        return True

    async def remove(self, queue: str, item_id: str) -> bool:
        return bool(
            await self._change(
                "DELETE FROM queue_items WHERE queue = ? AND id = ?", (queue, item_id)
            )
        )

    async def purge(self, queue: str) -> int:
        return await self._change("DELETE FROM queue_items WHERE queue = ?", (queue,))

    async def stats(self, queue: str) -> QueueStats:
        async with Transaction(self.reader, write=False) as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(items.c.enqueued_at)).where(
                        items.c.queue == queue
                    )
                )
            ).one()
        depth, oldest = row
        age = (now_ms() - oldest) / 1000 if oldest is not None else 0.0
        return QueueStats(depth=int(depth), oldest_age_seconds=max(0.0, age))

    async def wait(self, queue: str, timeout: float) -> None:
        """Returns on a put in this process at once, on a commit by another
        process within ``WATCH_INTERVAL`` (``WATCH_INTERVAL_IDLE`` after a
        quiet spell), else after ``timeout``."""
        signal = self._signal(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        version = self._data_version()
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(signal.wait(), min(left, self._interval))
                break
            except TimeoutError:
                now = self._data_version()
                if now == version:
                    self._interval = min(self._interval * 2, WATCH_INTERVAL_IDLE)
                else:
                    self._interval = WATCH_INTERVAL
                    version = now
                    if self._ready(queue):
                        break
        signal.clear()

    def _ready(self, queue: str) -> bool:
        """Whether ``queue`` has an item to lease now (a read: it never waits
        for the writer, and other queues' traffic does not wake this one)."""
        if self._watch is None:
            return True
        try:
            row = self._watch.execute(
                "SELECT 1 FROM queue_items WHERE queue = ? AND not_before <= ? LIMIT 1",
                (queue, now_ms()),
            ).fetchone()
        except sqlite3.Error:
            return True
        return row is not None
