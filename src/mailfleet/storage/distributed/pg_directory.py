"""``DirectoryStore`` on the PostgreSQL directory database: the portable
statements of ``storage/sql/directory.py``, reads run by asyncpg
(``PgDatabase``), the rare writes (sign-up, log in, domains) through
SQLAlchemy's asyncpg dialect. The directory also holds each account's
placement on a shard (``pg_shards.PgCluster``), written by the mailbox store
when it makes the account's mailbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from mailfleet.storage.distributed.pg_database import sqlalchemy_url
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.sql.directory import SqlDirectoryStore


class PgDirectoryStore(SqlDirectoryStore):
    def __init__(self, cluster: PgCluster) -> None:
        # Created now, connected on first write; a small pool: writes are rare.
        writer = create_async_engine(
            sqlalchemy_url(cluster.directory.url), pool_size=2, max_overflow=2
        )
        super().__init__(writer, cluster.directory)
        self.cluster = cluster

    async def open(self) -> None:
        await self.cluster.open()

    async def close(self) -> None:
        await self.writer.dispose()
        await self.cluster.close()
