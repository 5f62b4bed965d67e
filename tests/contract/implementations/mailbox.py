"""Mailbox store implementations (with the search index each fills beside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailfleet.storage.distributed.pg_directory import PgDirectoryStore
from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
from mailfleet.storage.distributed.pg_search import PgSearchIndex
from mailfleet.storage.distributed.pg_shards import PgCluster, ShardConfig
from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex
from mailfleet.storage.interfaces import DirectoryStore, MailboxStore, SearchIndex
from tests.support.postgres import fresh_databases

from ..backends import register

# Small, so that tests reach the log's retention with a few hundred changes.
KEEP_CHANGES = 100


@dataclass
class MailboxBackend:
    mailbox: MailboxStore
    search: SearchIndex
    directory: DirectoryStore
    # Every on_commit call the store made: {account_id: head}.
    commits: list[dict[int, int]] = field(default_factory=list)


@register("mailbox", "embedded", "sqlite")
@asynccontextmanager
async def sqlite_mailbox(directory: Path) -> AsyncIterator[MailboxBackend]:
    database = SqliteDatabase(directory / "metadata.sqlite")
    search = SqliteSearchIndex(database)
    commits: list[dict[int, int]] = []

    async def on_commit(heads: Mapping[int, int]) -> None:
        commits.append(dict(heads))

    mailbox = SqliteMailboxStore(
        database, search=search, on_commit=on_commit, keep_changes=KEEP_CHANGES
    )
    backend = MailboxBackend(mailbox, search, SqliteDirectoryStore(database), commits)
    await mailbox.open()
    await search.open()
    try:
        yield backend
    finally:
        await search.close()
        await mailbox.close()


@register("mailbox", "distributed", "postgresql")
@asynccontextmanager
async def postgresql_mailbox(directory: Path) -> AsyncIterator[MailboxBackend]:
    """A directory database and two shards: accounts the suite makes are
    spread over both, so every query must find its account's shard."""
    async with fresh_databases(3) as (directory_url, shard0, shard1):
        cluster = PgCluster(
            directory_url, [ShardConfig("shard0", shard0), ShardConfig("shard1", shard1)]
        )
        commits: list[dict[int, int]] = []

        async def on_commit(heads: Mapping[int, int]) -> None:
            commits.append(dict(heads))

        mailbox = PgMailboxStore(cluster, on_commit=on_commit, keep_changes=KEEP_CHANGES)
        # A walk of three: the suite's small mailboxes take both paths of a
        # search (the newest messages walked, then the GIN index).
        search = PgSearchIndex(cluster, recent_walk=3)
        directory_store = PgDirectoryStore(cluster)
        backend = MailboxBackend(mailbox, search, directory_store, commits)
        await mailbox.open()
        await search.open()
        await directory_store.open()
        try:
            yield backend
        finally:
            await directory_store.close()
            await search.close()
            await mailbox.close()
