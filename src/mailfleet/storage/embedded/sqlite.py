"""The SQLite metadata database: WAL, full fsync on commit (an acknowledged
write survives power loss), one writer connection that takes the write lock at
BEGIN, readers that never block it.

On the embedded profile one database file fills three roles, openly: the
directory (``SqliteDirectoryStore``), the mailboxes (``sqlite_mailbox.py``)
and the search index (``sqlite_search.py``). ``SqliteDatabase`` is what they
share: the engines, the writer thread for mailbox writes, migrations, and one
open/close for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from mailfleet.storage.embedded.sqlite_reads import SqliteReader
from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.migrations import ensure_schema
from mailfleet.storage.sql.directory import SqlDirectoryStore
from mailfleet.storage.sql.transaction import Transaction


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative`` or ``sqlite:////absolute`` → a path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url[len("sqlite:///") :])


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver so that SQLAlchemy's BEGIN is the only one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def create_sqlite_engine(path: Path, *, write: bool, pool_size: int = 1) -> AsyncEngine:
    """An async engine on one database file: the writer's (one connection,
    ``BEGIN IMMEDIATE``) or readers' (``pool_size`` connections)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1 if write else pool_size,
        max_overflow=0,
    )
    event.listen(engine.sync_engine, "connect", _pragmas)

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Taking the write lock at BEGIN avoids SQLITE_BUSY on lock upgrade
        # when another process (the admin CLI) writes at the same time.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class SqliteDatabase:
    """One metadata file shared by the roles it fills. Opened by the first of
    them (migrating the schema), closed by the last."""

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = path
        # At open: upgrade the schema, or refuse one not at head (``mailfleet db upgrade``).
        self.migrate = migrate
        # Migrations and the directory's rare writes (sign-up, log in).
        self.write_engine = create_sqlite_engine(path, write=True)
        # Mailbox writes: a plain sqlite3 connection owned by one thread, where
        # the writes of concurrent callers commit together (decision 0003).
        self.writer = SqliteWriter(path)
        # Every read: plain sqlite3, on the awaiting thread (decision 0013).
        self.reader = SqliteReader(path)
        self._users = 0

    async def open(self) -> None:
        if self._users == 0:
            try:
                async with Transaction(self.write_engine, write=True) as conn:
                    await conn.run_sync(ensure_schema, migrate=self.migrate)
            except BaseException:  # a refused schema (SchemaOutOfDate) leaves nothing open
                await self.write_engine.dispose()
                raise
            self.writer.start()
            self.reader.open()
        self._users += 1

    async def close(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            self.reader.close()
            await self.writer.stop()
            await self.write_engine.dispose()


class SqliteDirectoryStore(SqlDirectoryStore):
    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database.write_engine, database.reader)
        self.database = database

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()
