"""Group commit: write steps of concurrent callers share one transaction, so
one fsync makes many of them durable (the way a database log or Postfix's
queue manager amortizes its syncs). Each step runs in its own savepoint: a step
that fails rolls back alone and raises to its caller; the others commit.
Every caller returns only after the shared commit, so nothing is acknowledged
before it is durable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailfleet.storage.sql.transaction import Transaction, storage_error

T = TypeVar("T")
Step = Callable[[AsyncConnection], Awaitable[Any]]


class GroupCommit:
    def __init__(self, engine: AsyncEngine, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._pending: list[tuple[Step, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, step: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((step, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # While one batch commits, the next one gathers.
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            results: list[tuple[asyncio.Future[Any], bool, Any]] = []
            try:
                async with Transaction(self.engine, write=True) as conn:
                    for step, future in batch:
                        if future.done():  # its caller gave up (cancelled)
                            continue
                        try:
                            async with conn.begin_nested():
                                results.append((future, True, await step(conn)))
                        except Exception as exc:
                            results.append((future, False, storage_error(exc)))
            except Exception as exc:  # the commit itself failed: nothing is durable
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future, ok, value in results:
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
