"""SQLite reads on the calling thread (decision 0013).

A read of the mailbox or the directory is a few index probes in pages the OS
already caches: 10–100 µs in ``sqlite3``. Handing it to another thread costs
more than that (a queue, a wake-up, the GIL back), and going through an async
driver several times more again. So these reads run right where they are
awaited, on the event loop's own connection, each in one ``BEGIN`` … ``COMMIT``
for a consistent snapshot. WAL lets them run beside the writer thread without
ever waiting for it. Reads that can take milliseconds (full-text search) run
on ``run_in_thread`` instead, where SQLite lets go of the GIL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.dialects import sqlite as sqlite_dialect

from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.sql.query import Query

T = TypeVar("T")
DIALECT = sqlite_dialect.dialect()


def _unavailable(exc: sqlite3.Error) -> BackendUnavailable:
    return BackendUnavailable(f"sqlite: {exc}")


class _ReadTransaction:
    """``async with reader.read() as session``: one snapshot, on this thread."""

    __slots__ = ("_conn", "_owner", "_reader")

    def __init__(self, reader: SqliteReader) -> None:
        self._reader = reader
        self._conn: sqlite3.Connection | None = None
        self._owner = False

    async def __aenter__(self) -> _ReadTransaction:
        conn = self._reader.connection()
        self._conn = conn
        if not conn.in_transaction:  # a read inside another read shares its snapshot
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
            self._owner = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owner and self._conn is not None:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                if exc is None:
                    raise _unavailable(err) from err

    async def all(self, query: Query, **params: Any) -> Sequence[Any]:
        assert self._conn is not None
        sql, args = query.bind(DIALECT, params)
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def first(self, query: Query, **params: Any) -> Any | None:
        assert self._conn is not None
        sql, args = query.bind(DIALECT, params)
        try:
            return self._conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc


class SqliteReader:
    """Read-only connections to one database file: one per thread that reads
    (the event loop's, and the threads of ``run_in_thread``)."""

    def __init__(self, path: Path, *, threads: int = 2, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._threads = threads
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._generation = 0
        self._open = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self) -> None:
        with self._lock:
            self._open = True
            self._generation += 1

    def close(self) -> None:
        with self._lock:
            self._open = False
            connections, self._connections = self._connections, []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in connections:
            conn.close()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        if getattr(local, "generation", None) == self._generation and self._open:
            conn: sqlite3.Connection = local.conn
            return conn
        if not self._open:
            raise BackendUnavailable(f"{self.path.name}: the database is closed")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        with self._lock:
            self._connections.append(conn)
        local.conn, local.generation = conn, self._generation
        return conn

    def read(self) -> _ReadTransaction:
        return _ReadTransaction(self)

    async def run_in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in one read transaction on a reader thread:
        for reads long enough to be worth the hand-off."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix=f"sqlite-reader {self.path.name}"
            )

        def run() -> T:
            conn = self.connection()
            try:
                conn.execute("BEGIN")
                try:
                    return work(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)
