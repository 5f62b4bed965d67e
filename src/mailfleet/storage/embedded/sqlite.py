"""SQLite engines for the metadata store and the queue: WAL, full fsync on
commit (an acknowledged write survives power loss), one writer connection that
takes the write lock at BEGIN, several readers that never block it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from mailfleet.storage.sql.store import SqlMetadataStore


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


def create_sqlite_engines(path: Path, readers: int = 4) -> tuple[AsyncEngine, AsyncEngine]:
    """(writer, reader) engines on one database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{path}"
    writer = create_async_engine(url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    reader = create_async_engine(
        url, poolclass=AsyncAdaptedQueuePool, pool_size=readers, max_overflow=0
    )
    for engine in (writer, reader):
        event.listen(engine.sync_engine, "connect", _pragmas)

    @event.listens_for(writer.sync_engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Taking the write lock at BEGIN avoids SQLITE_BUSY on lock upgrade
        # when another process (the admin CLI) writes at the same time.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(reader.sync_engine, "begin")
    def _begin_deferred(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return writer, reader


def sqlite_metadata_store(url: str) -> SqlMetadataStore:
    writer, reader = create_sqlite_engines(sqlite_path(url))
    return SqlMetadataStore(writer, reader)
