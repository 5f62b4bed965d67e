"""Directory store implementations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore
from mailfleet.storage.interfaces import DirectoryStore

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
