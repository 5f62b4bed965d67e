"""Storage URL → implementation. The only module that imports implementations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailfleet.config import DeliverySettings, Settings
from mailfleet.storage.distributed.nats_queue import NatsQueue
from mailfleet.storage.distributed.redis_cache import RedisCache
from mailfleet.storage.distributed.redis_events import RedisEventBus
from mailfleet.storage.embedded.files import FileBlobStore, file_url_path
from mailfleet.storage.embedded.local_bus import LocalEventBus
from mailfleet.storage.embedded.memory import MemoryCache
from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore, sqlite_path
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.embedded.sqlite_queue import SqliteQueue
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex
from mailfleet.storage.interfaces import (
    BlobStore,
    Cache,
    DirectoryStore,
    EventBus,
    MailboxStore,
    Queue,
    QueuePolicy,
    SearchIndex,
)

# What each queue guarantees (decision 0009). ``incoming``: worker-in holds a
# batch of 64 for two minutes and gives up on a mail after ten deliveries.
INCOMING_POLICY = QueuePolicy(lease_seconds=120, max_deliveries=10, dedupe_window_seconds=120)
# Keys remembered as long as JetStream's default ``duplicate_window``: the
# window covers a client or a worker repeating itself at once; what repeats
# later is made harmless by ingest keys and delivery claims instead.
OUTGOING_DEDUPE_WINDOW_SECONDS = 120.0


@dataclass
class Stores:
    directory: DirectoryStore
    mailbox: MailboxStore
    search: SearchIndex
    blobs: BlobStore
    queue: Queue
    cache: Cache
    events: EventBus

    def roles(self) -> list[tuple[str, StorageRole]]:
        """Every role by name, in the order they open (the bus first: the
        mailbox store wakes it from its first commit); they close reversed."""
        return [
            ("events", self.events),
            ("directory", self.directory),
            ("mailbox", self.mailbox),
            ("search", self.search),
            ("blobs", self.blobs),
            ("queue", self.queue),
            ("cache", self.cache),
        ]

    async def open(self) -> None:
        opened: list[StorageRole] = []
        try:
            for _, store in self.roles():
                await store.open()
                opened.append(store)
        except BaseException:
            for store in reversed(opened):
                await store.close()
            raise

    async def close(self) -> None:
        for _, store in reversed(self.roles()):
            await store.close()


class StorageRole(Protocol):
    """What every storage role has, whatever else it does."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...


def _event_bus(url: str) -> EventBus:
    if url.startswith("redis://"):
        return RedisEventBus(url)
    if url.startswith("local://"):
        return LocalEventBus(Path(url[len("local://") :]))
    return LocalEventBus(None)  # memory://: this process only


def _queue(url: str, policies: dict[str, QueuePolicy]) -> Queue:
    if url.startswith("nats://"):
        return NatsQueue(url, policies)
    return SqliteQueue(url, policies)


def _cache(url: str) -> Cache:
    if url.startswith("redis://"):
        return RedisCache(url)
    return MemoryCache()


def queue_policies(settings: Settings) -> dict[str, QueuePolicy]:
    """Each queue's lease, delivery limit and dedupe window. ``outgoing``
    leases for ``delivery.lease_seconds`` (every attempt is bounded under
    it) and allows twice the deliveries its retry schedule needs to reach
    ``delivery.max_age_seconds``: worker-out bounces by age, and the queue's
    limit only catches an item that keeps failing in ways the worker does
    not see (its process dying mid-attempt)."""
    delivery = settings.delivery
    return {
        "incoming": INCOMING_POLICY,
        "outgoing": QueuePolicy(
            lease_seconds=delivery.lease_seconds,
            max_deliveries=2 * _deliveries_within_max_age(delivery) + 10,
            dedupe_window_seconds=OUTGOING_DEDUPE_WINDOW_SECONDS,
        ),
        "error": QueuePolicy(),
    }


def _deliveries_within_max_age(delivery: DeliverySettings) -> int:
    """Attempts the retry schedule makes before ``max_age_seconds``, every
    delay at its shortest (jitter); capped for a schedule of zeros."""
    scale = delivery.time_scale * (1 - delivery.jitter)
    steps = [s * scale for s in delivery.retry_schedule_seconds]
    budget = delivery.max_age_seconds * delivery.time_scale
    attempts = 1
    for step in steps[:-1]:
        if budget < 0:
            return attempts
        budget -= step
        attempts += 1
    last = steps[-1]
    if budget < 0:
        return attempts
    return attempts + (10_000 if last <= 0 else min(10_000, math.ceil(budget / last) + 1))


def create_stores(settings: Settings) -> Stores:
    """Builds (does not open) the stores the settings name. ``load_settings``
    has already refused schemes with no implementation."""
    events = _event_bus(settings.storage_url("events_url"))
    # On SQLite one database fills three roles: the directory, the mailboxes
    # and the search index, which the mailbox store writes in the same
    # transaction as the messages it indexes.
    database = SqliteDatabase(
        sqlite_path(settings.storage_url("metadata_url")),
        migrate=settings.storage.migrate_on_start,
    )
    search = SqliteSearchIndex(database)
    return Stores(
        directory=SqliteDirectoryStore(database),
        mailbox=SqliteMailboxStore(
            database,
            search=search,
            on_commit=events.publish,
            keep_changes=settings.storage.change_log_keep,
        ),
        search=search,
        blobs=FileBlobStore(file_url_path(settings.storage_url("blob_url"))),
        queue=_queue(settings.storage_url("queue_url"), queue_policies(settings)),
        cache=_cache(settings.storage_url("cache_url")),
        events=events,
    )
