"""Durable queues in their own SQLite file (the embedded stand-in for NATS
JetStream work-queue streams).

An item is leased by pushing its ``not_before`` past the lease; if the consumer
dies the item simply becomes visible again, so delivery is at-least-once and
consumers are idempotent. ``dead_letter`` moves an item to ``error`` with its
reason and its queue of origin, from where ``replay`` puts it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mailfleet.ids import now_ms
from mailfleet.storage.embedded.sqlite import create_sqlite_engines, sqlite_path
from mailfleet.storage.interfaces import QueueItem, QueueStats
from mailfleet.storage.sql.group_commit import GroupCommit
from mailfleet.storage.sql.transaction import Transaction

ERROR_QUEUE = "error"

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
        self.writer, self.reader = create_sqlite_engines(sqlite_path(url), readers=2)
        self._signals: dict[str, asyncio.Event] = {}
        # Puts from concurrent SMTP sessions and acks from workers share commits.
        self._group = GroupCommit(self.writer)

    async def open(self) -> None:
        async with Transaction(self.writer, write=True) as conn:
            await conn.run_sync(_metadata.create_all)

    async def close(self) -> None:
        await self.writer.dispose()
        await self.reader.dispose()

    async def ping(self) -> None:
        async with Transaction(self.reader, write=False) as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _signal(self, queue: str) -> asyncio.Event:
        return self._signals.setdefault(queue, asyncio.Event())

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

        async def insert(conn: AsyncConnection) -> str:
            if dedupe_key is not None:
                existing = (
                    await conn.execute(
                        sa.select(items.c.id).where(
                            items.c.queue == queue, items.c.dedupe_key == dedupe_key
                        )
                    )
                ).scalar()
                if existing is not None:
                    return str(existing)
            await conn.execute(
                items.insert().values(
                    queue=queue,
                    id=item_id,
                    payload=json.dumps(payload),
                    dedupe_key=dedupe_key,
                    attempts=0,
                    enqueued_at=now,
                    not_before=now + int(delay_seconds * 1000),
                    last_error="",
                    origin="",
                )
            )
            return item_id

        stored = await self._group.run(insert)
        self._signal(queue).set()
        return stored

    async def lease(self, queue: str, *, limit: int, lease_seconds: float) -> list[QueueItem]:
        now = now_ms()
        async with Transaction(self.writer, write=True) as conn:
            rows = (
                await conn.execute(
                    items.select()
                    .where(items.c.queue == queue, items.c.not_before <= now)
                    .order_by(items.c.not_before)
                    .limit(limit)
                )
            ).all()
            if not rows:
                return []
            until = now + int(lease_seconds * 1000)
            await conn.execute(
                items.update()
                .where(items.c.queue == queue, items.c.id.in_([r.id for r in rows]))
                .values(not_before=until, attempts=items.c.attempts + 1)
            )
        return [
            QueueItem(
                r.queue,
                r.id,
                json.loads(r.payload),
                r.attempts + 1,
                r.enqueued_at,
                until,
                r.last_error,
                r.origin,
            )
            for r in rows
        ]

    async def ack(self, item: QueueItem) -> None:
        async def delete(conn: AsyncConnection) -> None:
            await conn.execute(
                items.delete().where(items.c.queue == item.queue, items.c.id == item.id)
            )

        await self._group.run(delete)

    async def retry(self, item: QueueItem, *, delay_seconds: float, error: str) -> None:
        async with Transaction(self.writer, write=True) as conn:
            await conn.execute(
                items.update()
                .where(items.c.queue == item.queue, items.c.id == item.id)
                .values(not_before=now_ms() + int(delay_seconds * 1000), last_error=error)
            )

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        async with Transaction(self.writer, write=True) as conn:
            await conn.execute(
                items.update()
                .where(items.c.queue == item.queue, items.c.id == item.id)
                .values(
                    queue=ERROR_QUEUE,
                    origin=item.queue,
                    last_error=error,
                    not_before=now_ms(),
                    dedupe_key=None,
                )
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
        async with Transaction(self.writer, write=True) as conn:
            row = (
                await conn.execute(
                    items.select().where(items.c.queue == ERROR_QUEUE, items.c.id == item_id)
                )
            ).first()
            if row is None or not row.origin:
                return False
            await conn.execute(
                items.update()
                .where(items.c.queue == ERROR_QUEUE, items.c.id == item_id)
                .values(queue=row.origin, origin="", attempts=0, not_before=now_ms())
            )
        self._signal(row.origin).set()
        return True

    async def remove(self, queue: str, item_id: str) -> bool:
        async with Transaction(self.writer, write=True) as conn:
            result = await conn.execute(
                items.delete().where(items.c.queue == queue, items.c.id == item_id)
            )
        return bool(result.rowcount)

    async def purge(self, queue: str) -> int:
        async with Transaction(self.writer, write=True) as conn:
            result = await conn.execute(items.delete().where(items.c.queue == queue))
        return int(result.rowcount)

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
        signal = self._signal(queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout)
        signal.clear()
