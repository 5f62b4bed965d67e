"""Bayes statistics implementations: each with the mailbox store it lives
beside (training marks the account's messages)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mailfleet.storage.distributed.pg_bayes import PgBayesStore
from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
from mailfleet.storage.embedded.sqlite_bayes import SqliteBayesStore
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.interfaces import BayesStore, MailboxStore

from ..backends import register
from .mailbox import postgresql_mailbox, sqlite_mailbox


@dataclass
class BayesBackend:
    mailbox: MailboxStore
    bayes: BayesStore


@register("bayes", "embedded", "sqlite")
@asynccontextmanager
async def sqlite_bayes(directory: Path) -> AsyncIterator[BayesBackend]:
    async with sqlite_mailbox(directory) as backend:
        assert isinstance(backend.mailbox, SqliteMailboxStore)
        store = SqliteBayesStore(backend.mailbox.database)
        await store.open()
        try:
            yield BayesBackend(backend.mailbox, store)
        finally:
            await store.close()


@register("bayes", "distributed", "postgresql")
@asynccontextmanager
async def postgresql_bayes(directory: Path) -> AsyncIterator[BayesBackend]:
    """Two shards: each account's statistics on its own, each shard's
    global ones beside them."""
    async with postgresql_mailbox(directory) as backend:
        assert isinstance(backend.mailbox, PgMailboxStore)
        store = PgBayesStore(backend.mailbox)
        await store.open()
        try:
            yield BayesBackend(backend.mailbox, store)
        finally:
            await store.close()
