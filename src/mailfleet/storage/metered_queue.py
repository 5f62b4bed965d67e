"""The queue role counted for ``/metrics`` (issue 15), whatever its backend:
items put, acknowledged, retried and dead-lettered per queue, and the
latency and failures of each call. ``create_stores`` wraps every queue in
it, so no implementation counts for itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailfleet.logs import TRACE_KEY, get_logger
from mailfleet.metrics import QUEUE_OPERATIONS, timed
from mailfleet.storage.interfaces import Queue, QueueItem, QueuePolicy, QueueStats

hops = get_logger("mailfleet.queue")


class MeteredQueue:
    def __init__(self, inner: Queue) -> None:
        self.inner = inner

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    def policy(self, queue: str) -> QueuePolicy:
        return self.inner.policy(queue)

    async def put(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        delay_seconds: float = 0,
    ) -> str:
        item_id = await timed(
            "queue",
            "put",
            lambda: self.inner.put(
                queue, payload, dedupe_key=dedupe_key, delay_seconds=delay_seconds
            ),
        )
        QUEUE_OPERATIONS.labels(queue, "put").inc()
        trace = payload.get(TRACE_KEY)
        if trace:
            # The "queued" hop of a mail (decision 0029): every backend's put.
            hops.info(
                "queued",
                trace_id=trace,
                queue=queue,
                item=item_id,
                **({"domain": payload["domain"]} if "domain" in payload else {}),
                **({"delay": delay_seconds} if delay_seconds else {}),
            )
        return item_id

    async def fetch(self, queue: str, *, limit: int, timeout: float) -> list[QueueItem]:
        # Not timed: it waits for work by design.
        return await self.inner.fetch(queue, limit=limit, timeout=timeout)

    async def ack(self, item: QueueItem) -> None:
        await timed("queue", "ack", lambda: self.inner.ack(item))
        QUEUE_OPERATIONS.labels(item.queue, "ack").inc()

    async def ack_many(self, items: Sequence[QueueItem]) -> None:
        await timed("queue", "ack_many", lambda: self.inner.ack_many(items))
        for item in items:
            QUEUE_OPERATIONS.labels(item.queue, "ack").inc()

    async def retry(self, item: QueueItem, *, delay_seconds: float) -> None:
        await timed("queue", "retry", lambda: self.inner.retry(item, delay_seconds=delay_seconds))
        QUEUE_OPERATIONS.labels(item.queue, "retry").inc()

    async def retry_now(self, queue: str, item_id: str) -> str | None:
        return await self.inner.retry_now(queue, item_id)

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        await timed("queue", "dead_letter", lambda: self.inner.dead_letter(item, error=error))
        QUEUE_OPERATIONS.labels(item.queue, "dead_letter").inc()
        trace = item.payload.get(TRACE_KEY)
        if trace:
            hops.warning(
                "dead-lettered", trace_id=trace, queue=item.queue, item=item.id, error=error
            )

    async def list(self, queue: str, *, limit: int = 100) -> list[QueueItem]:
        return await self.inner.list(queue, limit=limit)

    async def get(self, queue: str, item_id: str) -> QueueItem | None:
        return await self.inner.get(queue, item_id)

    async def replay(self, item_id: str) -> bool:
        return await self.inner.replay(item_id)

    async def remove(self, queue: str, item_id: str) -> bool:
        return await self.inner.remove(queue, item_id)

    async def purge(self, queue: str) -> int:
        return await self.inner.purge(queue)

    async def stats(self, queue: str) -> QueueStats:
        return await timed("queue", "stats", lambda: self.inner.stats(queue))
