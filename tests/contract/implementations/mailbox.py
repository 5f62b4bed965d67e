"""Mailbox store implementations (with the search index each fills beside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailfleet.storage.embedded.sqlite import SqliteDatabase, SqliteDirectoryStore
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex
from mailfleet.storage.interfaces import DirectoryStore, MailboxStore, SearchIndex

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
