"""Durable queues in their own SQLite file: the embedded implementation of the
``Queue`` contract (``storage/interfaces.py``), the same one NATS JetStream
work-queue streams honour (decision 0009).

A fetch leases an item by pushing its ``not_before`` past the queue's lease
and counting a delivery in ``attempts``; an item whose consumer dies simply
becomes due again. Dedupe keys live in a table of their own with an expiry
(the queue's dedupe window), apart from the items, so a key holds for the
window whether or not its item is still there, exactly as a JetStream
``duplicate_window`` does. ``dead_letter`` moves an item to ``error`` with
its reason and its queue of origin, from where ``replay`` puts it back.

Writes go through one writer thread (``SqliteWriter``): puts from concurrent
SMTP sessions and acks from workers share commits. A waiting ``fetch`` wakes
at once on a put in this process, within ``WATCH_INTERVAL`` (up to
``WATCH_INTERVAL_IDLE`` after a quiet spell) on a commit by another process
(the database's change counter), and when the next delayed item, retry or
lease comes due.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from mailfleet.ids import now_ms
from mailfleet.storage.embedded.sqlite import create_sqlite_engine, sqlite_path
from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.interfaces import QueueItem, QueuePolicy, QueueStats, new_queue_item_id
from mailfleet.storage.sql.transaction import Transaction

ERROR_QUEUE = "error"
# Seconds between looks at the change counter while waiting: the shortest
# while commits keep coming (mail flowing), doubling up to the longest while
# nothing changes, so an idle server does not wake 200 times a second.
WATCH_INTERVAL = 0.005
WATCH_INTERVAL_IDLE = 0.05
# Expired dedupe keys are deleted by a put at most this often (ms).
DEDUPE_PRUNE_INTERVAL_MS = 10_000

# The tables, as created (``_create``) and as read (``items``).
_DDL = (
    "CREATE TABLE IF NOT EXISTS queue_items ("
    " queue TEXT NOT NULL, id TEXT NOT NULL, payload TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, enqueued_at BIGINT NOT NULL, not_before BIGINT NOT NULL,"
    " last_error TEXT NOT NULL, origin TEXT NOT NULL, PRIMARY KEY (queue, id))",
    "CREATE INDEX IF NOT EXISTS ix_queue_ready ON queue_items (queue, not_before)",
    # A key put on a queue within its window: the first item's id.
    "CREATE TABLE IF NOT EXISTS queue_dedupe ("
    " queue TEXT NOT NULL, key TEXT NOT NULL, item_id TEXT NOT NULL,"
    " expires_at BIGINT NOT NULL, PRIMARY KEY (queue, key))",
    "CREATE INDEX IF NOT EXISTS ix_queue_dedupe_expiry ON queue_dedupe (expires_at)",
)
_metadata = sa.MetaData()
items = sa.Table(
    "queue_items",
    _metadata,
    sa.Column("queue", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("enqueued_at", sa.BigInteger, nullable=False),
    sa.Column("not_before", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
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
    def __init__(
        self,
        url: str,
        policies: Mapping[str, QueuePolicy] | None = None,
        *,
        default_policy: QueuePolicy | None = None,
    ) -> None:
        path = sqlite_path(url)
        self._policies = dict(policies or {})
        self._default_policy = default_policy or QueuePolicy()
        self._writer = SqliteWriter(path)
        self.reader = create_sqlite_engine(path, write=False, pool_size=2)
        self._signals: dict[str, asyncio.Event] = {}
        self._path = path
        self._watch: sqlite3.Connection | None = None
        self._interval = WATCH_INTERVAL
        self._pruned_at = 0

    def policy(self, queue: str) -> QueuePolicy:
        return self._policies.get(queue, self._default_policy)

    async def open(self) -> None:
        await asyncio.to_thread(self._create)
        self._writer.start()
        # Puts from other processes (an MX beside a worker-in process) wake
        # ``fetch`` through the database's change counter.
        self._watch = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

    def _create(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("BEGIN IMMEDIATE")
            try:
                columns = {r[1] for r in conn.execute("PRAGMA table_info(queue_items)")}
                if "dedupe_key" in columns:
                    self._upgrade_from_item_keys(conn)
                for statement in _DDL:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _upgrade_from_item_keys(self, conn: sqlite3.Connection) -> None:
        """The first layout kept dedupe keys on the items (unique while the
        item existed) and reasons on live items: keys move to
        ``queue_dedupe`` with a fresh window, reasons stay on ``error`` only."""
        conn.execute("DROP INDEX IF EXISTS ix_queue_ready")
        conn.execute("ALTER TABLE queue_items RENAME TO queue_items_v1")
        for statement in _DDL:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO queue_items SELECT queue, id, payload, attempts, enqueued_at,"
            " not_before, CASE WHEN queue = ? THEN last_error ELSE '' END, origin"
            " FROM queue_items_v1",
            (ERROR_QUEUE,),
        )
        now = now_ms()
        keys = conn.execute(
            "SELECT queue, dedupe_key, id FROM queue_items_v1 WHERE dedupe_key IS NOT NULL"
        ).fetchall()
        conn.executemany(
            "INSERT OR REPLACE INTO queue_dedupe VALUES (?, ?, ?, ?)",
            [(q, k, i, now + self._window_ms(q)) for q, k, i in keys],
        )
        conn.execute("DROP TABLE queue_items_v1")

    async def close(self) -> None:
        await self._writer.stop()
        await self.reader.dispose()
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def ping(self) -> None:
        async with Transaction(self.reader, write=False) as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _window_ms(self, queue: str) -> int:
        return int(self.policy(queue).dedupe_window_seconds * 1000)

    # -- waking fetchers -----------------------------------------------------------

    def _signal(self, queue: str) -> asyncio.Event:
        return self._signals.setdefault(queue, asyncio.Event())

    def _wake(self, queue: str, after_seconds: float) -> None:
        """Wakes this process's fetchers on ``queue`` when an item becomes
        due: now, or when a delayed put or a retry comes due (fetchers in
        other processes see it through the change counter and the due time)."""
        if after_seconds <= 0:
            self._signal(queue).set()
        else:
            asyncio.get_running_loop().call_later(after_seconds, self._signal(queue).set)

    def _data_version(self) -> int:
        """Changes whenever another connection (any process) commits."""
        if self._watch is None:
            return 0
        try:
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return 0

    def _due_in(self, queue: str) -> float:
        """Seconds until the next item of ``queue`` is due (0 when one is,
        infinity when there is none). A read: it never waits for the writer,
        and other queues' traffic does not wake this one."""
        if self._watch is None:
            return 0.0
        try:
            row = self._watch.execute(
                "SELECT min(not_before) FROM queue_items WHERE queue = ?", (queue,)
            ).fetchone()
        except sqlite3.Error:
            return 0.0
        if row is None or row[0] is None:
            return math.inf
        return max(0.0, (int(row[0]) - now_ms()) / 1000)

    async def _wait(self, queue: str, timeout: float) -> None:
        """Returns when an item of ``queue`` may be due, or after ``timeout``."""
        signal = self._signal(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, self._due_in(queue))
        limit = loop.time() + timeout
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
                    deadline = min(limit, loop.time() + self._due_in(queue))
        signal.clear()

    # -- the contract ----------------------------------------------------------------

    async def put(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        delay_seconds: float = 0,
    ) -> str:
        now = now_ms()
        item_id = new_queue_item_id(now)
        body = json.dumps(payload)
        window = self._window_ms(queue)
        prune = now - self._pruned_at >= DEDUPE_PRUNE_INTERVAL_MS
        if prune:
            self._pruned_at = now

        def insert(conn: sqlite3.Connection) -> str:
            if prune:
                conn.execute("DELETE FROM queue_dedupe WHERE expires_at <= ?", (now,))
            if dedupe_key is not None:
                row = conn.execute(
                    "SELECT item_id FROM queue_dedupe"
                    " WHERE queue = ? AND key = ? AND expires_at > ?",
                    (queue, dedupe_key, now),
                ).fetchone()
                if row is not None:
                    return str(row[0])
                conn.execute(
                    "INSERT OR REPLACE INTO queue_dedupe VALUES (?, ?, ?, ?)",
                    (queue, dedupe_key, item_id, now + window),
                )
            conn.execute(
                "INSERT INTO queue_items VALUES (?, ?, ?, 0, ?, ?, '', '')",
                (queue, item_id, body, now, now + int(delay_seconds * 1000)),
            )
            return item_id

        stored = await self._writer.run(insert)
        if stored == item_id:
            self._wake(queue, delay_seconds)
        return stored

    async def fetch(self, queue: str, *, limit: int, timeout: float) -> list[QueueItem]:
        policy = self.policy(queue)
        lease_ms = int(policy.lease_seconds * 1000)

        def take(conn: sqlite3.Connection) -> tuple[list[QueueItem], int]:
            now = now_ms()
            until = now + lease_ms
            rows = conn.execute(
                "SELECT id, payload, attempts, enqueued_at FROM queue_items"
                " WHERE queue = ? AND not_before <= ? ORDER BY not_before LIMIT ?",
                (queue, now, limit),
            ).fetchall()
            spent = [r for r in rows if r[2] >= policy.max_deliveries]
            for r in spent:
                _move_to_error(
                    conn, queue, r[0], f"gave up after {r[2]} deliveries (last lease expired)", now
                )
            fresh = [r for r in rows if r[2] < policy.max_deliveries]
            conn.executemany(
                "UPDATE queue_items SET not_before = ?, attempts = attempts + 1"
                " WHERE queue = ? AND id = ?",
                [(until, queue, r[0]) for r in fresh],
            )
            taken = [QueueItem(queue, r[0], json.loads(r[1]), r[2] + 1, r[3], until) for r in fresh]
            return taken, len(spent)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            taken, spent = await self._writer.run(take)
            if taken:
                return taken
            if spent:
                continue  # the due items were spent; others may be due too
            left = deadline - loop.time()
            if left <= 0:
                return []
            await self._wait(queue, left)

    async def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        def change(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self._writer.run(change)

    async def ack(self, item: QueueItem) -> None:
        await self.remove(item.queue, item.id)

    async def ack_many(self, items: Sequence[QueueItem]) -> None:
        keys = [(item.queue, item.id) for item in items]
        if not keys:
            return

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM queue_items WHERE queue = ? AND id = ?", keys)

        await self._writer.run(delete)

    async def retry(self, item: QueueItem, *, delay_seconds: float) -> None:
        if item.attempts >= self.policy(item.queue).max_deliveries:
            await self.dead_letter(
                item, error=f"gave up after {item.attempts} deliveries (last retried)"
            )
            return
        await self._change(
            "UPDATE queue_items SET not_before = ? WHERE queue = ? AND id = ?",
            (now_ms() + int(delay_seconds * 1000), item.queue, item.id),
        )
        self._wake(item.queue, delay_seconds)

    async def retry_now(self, queue: str, item_id: str) -> str | None:
        def again(conn: sqlite3.Connection) -> str | None:
            now = now_ms()
            copy_id = new_queue_item_id(now)
            copied = conn.execute(
                "INSERT INTO queue_items SELECT queue, ?, payload, 0, enqueued_at, ?,"
                " last_error, origin FROM queue_items WHERE queue = ? AND id = ?",
                (copy_id, now, queue, item_id),
            ).rowcount
            if not copied:
                return None
            conn.execute("DELETE FROM queue_items WHERE queue = ? AND id = ?", (queue, item_id))
            return copy_id

        copy_id = await self._writer.run(again)
        if copy_id is not None:
            self._wake(queue, 0)
        return copy_id

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        def move(conn: sqlite3.Connection) -> None:
            _move_to_error(conn, item.queue, item.id, error, now_ms())

        await self._writer.run(move)

    async def list(self, queue: str, *, limit: int = 100) -> list[QueueItem]:
        async with Transaction(self.reader, write=False) as conn:
            rows = await conn.execute(
                items.select()
                .where(items.c.queue == queue)
                # Put order within a millisecond (ids end in random digits).
                .order_by(items.c.enqueued_at, sa.literal_column("rowid"))
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
                "UPDATE queue_items SET queue = ?, origin = '', last_error = '', attempts = 0,"
                " not_before = ? WHERE queue = ? AND id = ?",
                (row[0], now_ms(), ERROR_QUEUE, item_id),
            )
            return str(row[0])

        origin = await self._writer.run(back)
        if origin is None:
            return False
        self._wake(origin, 0)
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


def _move_to_error(
    conn: sqlite3.Connection, queue: str, item_id: str, error: str, now: int
) -> None:
    conn.execute(
        "UPDATE queue_items SET queue = ?, origin = ?, last_error = ?, not_before = ?"
        " WHERE queue = ? AND id = ?",
        (ERROR_QUEUE, queue, error, now, queue, item_id),
    )
