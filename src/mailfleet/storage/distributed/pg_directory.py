"""``DirectoryStore`` on the PostgreSQL directory database: the portable
statements of ``storage/sql/directory.py``, reads run by asyncpg
(``PgDatabase``), the rare writes (sign-up, log in, domains) through
SQLAlchemy's asyncpg dialect. The directory also holds each account's
placement on a shard (``pg_shards.PgCluster``), written by the mailbox store
when it makes the account's mailbox."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mailfleet.storage.distributed.pg_database import sqlalchemy_url, storage_errors
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.sql.directory import SqlDirectoryStore
from mailfleet.storage.sql.transaction import Transaction


class _PgTransaction(Transaction):
    """asyncpg raises a refused connection as a bare ``OSError`` through
    SQLAlchemy: mapped here too, so a directory that is down is "try later"."""

    def __init__(self, engine: AsyncEngine, label: str) -> None:
        super().__init__(engine, write=True)
        self.label = label

    async def __aenter__(self) -> AsyncConnection:
        with storage_errors(self.label):
            return await super().__aenter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        with storage_errors(self.label):
            await super().__aexit__(exc_type, exc, tb)


class PgDirectoryStore(SqlDirectoryStore):
    def __init__(self, cluster: PgCluster) -> None:
        # Created now, connected on first write; a small pool: writes are rare.
        writer = create_async_engine(
            sqlalchemy_url(cluster.directory.url), pool_size=2, max_overflow=2
        )
        super().__init__(writer, cluster.directory)
        self.cluster = cluster

    def _write(self) -> Transaction:
        return _PgTransaction(self.writer, self.cluster.directory.label)

    async def open(self) -> None:
        await self.cluster.open()

    async def close(self) -> None:
        await self.writer.dispose()
        await self.cluster.close()
