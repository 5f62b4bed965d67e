"""One thread that owns a SQLite connection and commits the write steps of
concurrent callers together (group commit, decision 0003).

A caller hands over a plain function of the connection and awaits its result.
The thread takes every step waiting, runs them in one ``BEGIN IMMEDIATE``
transaction, each in its own savepoint (a failing step rolls back alone and
raises to its caller), commits once, then wakes the callers: one fsync and one
thread hand-off for the whole batch, instead of several per step as through
an async driver. Nothing is answered before the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mailfleet.storage.errors import BackendUnavailable, DuplicateKey, StorageFull

T = TypeVar("T")
Step = Callable[[sqlite3.Connection], Any]
_STOP = object()


def _storage_error(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError):
        return DuplicateKey(str(exc))
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return StorageFull(str(exc))
        return BackendUnavailable(str(exc))
    return exc


class SqliteWriter:
    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000, max_batch: int = 256):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self._steps: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name=f"sqlite-writer {self.path.name}")
        self._thread.daemon = True
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._steps.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise BackendUnavailable(f"{self.path.name}: writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._steps.put((step, loop, future))
        return await future

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return conn

    def _main(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._steps.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        more = self._steps.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, Any, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step, loop, future in batch:
                    conn.execute("SAVEPOINT step")
                    try:
                        outcomes.append((loop, future, True, step(conn)))
                        conn.execute("RELEASE step")
                    except Exception as exc:
                        conn.execute("ROLLBACK TO step")
                        conn.execute("RELEASE step")
                        outcomes.append((loop, future, False, _storage_error(exc)))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # nothing of this batch is durable
            failure = _storage_error(exc)
            outcomes = [(loop, future, False, failure) for _, loop, future in batch]
        # One wake-up per event loop for the whole batch, not one per caller.
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for loop, future, ok, value in outcomes:
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the caller was cancelled; the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
