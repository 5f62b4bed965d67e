"""Storage URL → implementation. The only module that imports implementations."""

from __future__ import annotations

from dataclasses import dataclass

from mailfleet.config import Settings
from mailfleet.storage.embedded.files import FileBlobStore, file_url_path
from mailfleet.storage.embedded.memory import MemoryCache, MemoryEventBus
from mailfleet.storage.embedded.sqlite import sqlite_metadata_store
from mailfleet.storage.embedded.sqlite_queue import SqliteQueue
from mailfleet.storage.interfaces import (
    BlobStore,
    Cache,
    EventBus,
    MetadataStore,
    Queue,
    SearchIndex,
)


@dataclass
class Stores:
    metadata: MetadataStore
    # On SQLite the index lives in the metadata database (it is written in the
    # same transaction as the messages): the same object, opened once.
    search: SearchIndex
    blobs: BlobStore
    queue: Queue
    cache: Cache
    events: EventBus

    async def open(self) -> None:
        await self.metadata.open()
        await self.blobs.open()
        await self.queue.open()

    async def close(self) -> None:
        await self.queue.close()
        await self.blobs.close()
        await self.metadata.close()


def create_stores(settings: Settings) -> Stores:
    """Builds (does not open) the stores the settings name. ``load_settings``
    has already refused schemes with no implementation."""
    metadata = sqlite_metadata_store(
        settings.storage_url("metadata_url"), migrate=settings.storage.migrate_on_start
    )
    return Stores(
        metadata=metadata,
        search=metadata,
        blobs=FileBlobStore(file_url_path(settings.storage_url("blob_url"))),
        queue=SqliteQueue(settings.storage_url("queue_url")),
        cache=MemoryCache(),
        events=MemoryEventBus(),
    )
