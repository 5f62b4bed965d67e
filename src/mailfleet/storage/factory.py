"""Storage URL → implementation. The only module that imports implementations."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mailfleet.config import DeliverySettings, Settings
from mailfleet.storage.embedded.files import FileBlobStore, file_url_path
from mailfleet.storage.embedded.local_bus import LocalEventBus
from mailfleet.storage.embedded.memory import MemoryCache
from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore, sqlite_path
from mailfleet.storage.embedded.sqlite_bayes import SqliteBayesStore
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.embedded.sqlite_queue import SqliteQueue
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex
from mailfleet.storage.errors import MoveRefused
from mailfleet.storage.interfaces import (
    BayesStore,
    BlobStore,
    Cache,
    DirectoryStore,
    EventBus,
    MailboxStore,
    Queue,
    QueuePolicy,
    SearchIndex,
)
from mailfleet.storage.metered import metered
from mailfleet.storage.metered_queue import MeteredQueue
from mailfleet.storage.migrations import SchemaState, database_state, upgrade_database
from mailfleet.storage.outage_tolerant_cache import OutageTolerantCache

if TYPE_CHECKING:
    from mailfleet.storage.distributed.pg_move import MoveReport
    from mailfleet.storage.distributed.pg_shards import PgCluster

# The distributed implementations are imported where a URL names them, not
# here: their client libraries (asyncpg, SQLAlchemy's PostgreSQL dialect,
# aiobotocore, nats-py, redis-py) take ~0.6 s to import, which every CLI
# command and every embedded server would otherwise pay.

# What each queue guarantees (decision 0009). ``incoming``: worker-in holds a
# batch of 64 for ``storage.incoming_lease_seconds`` (30 s) and gives up on a
# mail after ten deliveries. The lease is also how long a mail waits when it
# went to a worker that died: on JetStream 2.9 the pull request a killed
# worker left waiting still takes the next item (decision 0014), so a short
# lease is what bounds that delay; a batch takes well under a second, and one
# that outlives its lease is stored once anyway (ingest keys).
INCOMING_MAX_DELIVERIES = 10
INCOMING_DEDUPE_WINDOW_SECONDS = 120.0
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
    bayes: BayesStore

    def roles(self) -> list[tuple[str, StorageRole]]:
        """Every role by name, in the order they open (the bus first: the
        mailbox store wakes it from its first commit); they close reversed."""
        return [
            ("events", self.events),
            ("directory", self.directory),
            ("mailbox", self.mailbox),
            ("search", self.search),
            ("bayes", self.bayes),
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
        from mailfleet.storage.distributed.redis_events import RedisEventBus

        return RedisEventBus(url)
    if url.startswith("local://"):
        return LocalEventBus(Path(url[len("local://") :]))
    return LocalEventBus(None)  # memory://: this process only


def blob_store(url: str) -> BlobStore:
    """``file:///DIR`` or ``s3://BUCKET[/PREFIX]?...`` (``S3Location``)."""
    if url.startswith("s3://"):
        from mailfleet.storage.distributed.s3_blobs import S3BlobStore

        return S3BlobStore.from_url(url)
    return FileBlobStore(file_url_path(url))


def _queue(url: str, policies: dict[str, QueuePolicy]) -> Queue:
    if url.startswith("nats://"):
        from mailfleet.storage.distributed.nats_queue import NatsQueue

        return NatsQueue(url, policies)
    return SqliteQueue(url, policies)


def _cache(url: str) -> Cache:
    if url.startswith("redis://"):
        from mailfleet.storage.distributed.redis_cache import RedisCache

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
        "incoming": QueuePolicy(
            lease_seconds=settings.storage.incoming_lease_seconds,
            max_deliveries=INCOMING_MAX_DELIVERIES,
            dedupe_window_seconds=INCOMING_DEDUPE_WINDOW_SECONDS,
        ),
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
    directory, mailbox, search, bayes = (
        postgresql_metadata(settings, events)
        if is_postgresql(settings)
        else _sqlite_metadata(settings, events)
    )
    return Stores(
        directory=metered(directory, "directory", DirectoryStore),
        mailbox=metered(mailbox, "mailbox", MailboxStore),
        search=metered(search, "search", SearchIndex),
        blobs=metered(blob_store(settings.storage_url("blob_url")), "blobs", BlobStore),
        queue=MeteredQueue(_queue(settings.storage_url("queue_url"), queue_policies(settings))),
        cache=metered(
            OutageTolerantCache(_cache(settings.storage_url("cache_url"))), "cache", Cache
        ),
        events=metered(events, "events", EventBus),
        bayes=metered(bayes, "bayes", BayesStore),
    )


def _sqlite_metadata(
    settings: Settings, events: EventBus
) -> tuple[DirectoryStore, MailboxStore, SearchIndex, BayesStore]:
    # On SQLite one database fills four roles: the directory, the mailboxes,
    # the search index, which the mailbox store writes in the same
    # transaction as the messages it indexes, and the Bayes statistics.
    database = SqliteDatabase(
        sqlite_path(settings.storage_url("metadata_url")),
        migrate=settings.storage.migrate_on_start,
    )
    search = SqliteSearchIndex(database)
    mailbox = SqliteMailboxStore(
        database,
        search=search,
        on_commit=events.publish,
        keep_changes=settings.storage.change_log_keep,
    )
    return SqliteDirectoryStore(database), mailbox, search, SqliteBayesStore(database)


# -- PostgreSQL metadata (decision 0016) ---------------------------------------


def is_postgresql(settings: Settings) -> bool:
    return settings.storage_url("metadata_url").startswith("postgresql")


def postgresql_cluster(settings: Settings) -> PgCluster:
    """The directory database and the mailbox shards the settings name."""
    from mailfleet.storage.distributed.pg_shards import PgCluster, ShardConfig

    return PgCluster(
        settings.storage_url("metadata_url"),
        [
            ShardConfig(s.name, s.url, s.replica_url or None)
            for s in settings.storage.metadata_shards
        ],
        migrate=settings.storage.migrate_on_start,
    )


def postgresql_metadata(
    settings: Settings, events: EventBus
) -> tuple[DirectoryStore, MailboxStore, SearchIndex, BayesStore]:
    """On PostgreSQL one cluster (directory + shards) fills four roles: the
    directory on its own database, each mailbox and its search documents on
    the account's shard, written in the same transaction, and the Bayes
    statistics on the account's shard (each shard's global ones beside)."""
    from mailfleet.storage.distributed.pg_bayes import PgBayesStore
    from mailfleet.storage.distributed.pg_directory import PgDirectoryStore
    from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
    from mailfleet.storage.distributed.pg_search import PgSearchIndex

    cluster = postgresql_cluster(settings)
    mailbox = PgMailboxStore(
        cluster, on_commit=events.publish, keep_changes=settings.storage.change_log_keep
    )
    return PgDirectoryStore(cluster), mailbox, PgSearchIndex(cluster), PgBayesStore(mailbox)


async def upgrade_metadata(settings: Settings) -> list[tuple[SchemaState, SchemaState]]:
    """``mailfleet db upgrade``: every metadata database (on PostgreSQL the
    directory and each shard) to the newest schema; each one's state before
    and after."""
    if not is_postgresql(settings):
        return [await asyncio.to_thread(upgrade_database, settings.storage_url("metadata_url"))]
    found = []
    for database in postgresql_cluster(settings).databases():
        before = await database.ensure_schema(migrate=True)
        found.append((before, await database.schema_state()))
    return found


async def metadata_states(settings: Settings) -> list[SchemaState]:
    """``mailfleet db status``: where each metadata database stands."""
    if not is_postgresql(settings):
        return [await asyncio.to_thread(database_state, settings.storage_url("metadata_url"))]
    return [await d.schema_state() for d in postgresql_cluster(settings).databases()]


async def move_account_to(settings: Settings, email: str, shard: str) -> MoveReport:
    """``mailfleet account move``: the account's mailbox to shard ``shard``
    while the service runs. Raises ``MoveRefused`` with the reason
    when it cannot start (no such account or shard, the embedded profile)."""
    if not is_postgresql(settings):
        raise MoveRefused("accounts move between PostgreSQL shards; this metadata is SQLite")
    from mailfleet.storage.distributed.pg_directory import PgDirectoryStore
    from mailfleet.storage.distributed.pg_move import move_account

    cluster = postgresql_cluster(settings)
    directory = PgDirectoryStore(cluster)
    await directory.open()
    try:
        account = await directory.get_account_by_email(email)
        if account is None:
            raise MoveRefused(f"no account {email}")
        return await move_account(cluster, account.id, shard)
    finally:
        await directory.close()
