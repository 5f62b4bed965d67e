"""Directory store implementations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.distributed.pg_directory import PgDirectoryStore
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore
from mailfleet.storage.interfaces import DirectoryStore
from tests.support.postgres import fresh_databases

from ..backends import register


@register("directory", "embedded", "sqlite")
@asynccontextmanager
async def sqlite_directory(directory: Path) -> AsyncIterator[DirectoryStore]:
    store = SqliteDirectoryStore(SqliteDatabase(directory / "metadata.sqlite"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@register("directory", "distributed", "postgresql")
@asynccontextmanager
async def postgresql_directory(directory: Path) -> AsyncIterator[DirectoryStore]:
    async with fresh_databases(1) as (url,):
        store = PgDirectoryStore(PgCluster(url))
        await store.open()
        try:
            yield store
        finally:
            await store.close()
