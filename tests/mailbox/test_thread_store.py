"""Thread assignment inside ``store_messages`` and the thread reads, on both
implementations of it: the portable SQL store (what PostgreSQL runs) and the
SQLite store's writer-thread path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailfleet.ids import new_id
from mailfleet.storage.embedded.sqlite import SqliteMetadataStore, create_sqlite_engines
from mailfleet.storage.interfaces import (
    FOLDER_ROLES,
    Account,
    Folder,
    ListCursor,
    MessagePatch,
    NewMessage,
)
from mailfleet.storage.sql.store import SqlMetadataStore

from .test_threads import _message


@pytest.fixture(params=["sql", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlMetadataStore]:
    path = tmp_path / "metadata.sqlite"
    store = SqlMetadataStore(*create_sqlite_engines(path)) if request.param == "sql" else None
    store = store or SqliteMetadataStore(path)
    await store.open()
    for account_id in (1, 2):
        await store.create_account(
            Account(account_id, f"u{account_id}@example.com", "", "x", False, 0),
            [
                Folder(account_id, account_id * 10 + i, r, r, 0, 0)
                for i, r in enumerate(FOLDER_ROLES)
            ],
        )
    yield store
    await store.close()


def _in(m: NewMessage, folder_id: int) -> NewMessage:
    return replace(m, folder_id=folder_id, ingest_key=f"{m.ingest_key}:{folder_id}")


async def test_out_of_order_arrivals_merge_into_one_thread(store: SqlMetadataStore) -> None:
    chain = {n: _in(_message(n, parent=n - 1 if n > 1 else None, at=n), 10) for n in range(1, 6)}
    for n in (3, 5, 1, 4, 2):
        await store.store_messages([chain[n]])
    threads = {(await store.get_message(1, m.id)).summary.thread_id for m in chain.values()}  # type: ignore[union-attr]
    assert len(threads) == 1
    (thread_id,) = threads
    in_order = await store.thread_messages(1, thread_id, limit=100)
    assert [m.id for m in in_order] == [chain[n].id for n in range(1, 6)]  # by received_at


async def test_one_batch_and_two_accounts(store: SqlMetadataStore) -> None:
    batch = [
        _in(_message(n, parent=n - 1 if n > 1 else None, at=n, account=a), a * 10)
        for n in (2, 1, 3)
        for a in (1, 2)
    ]
    batch = [replace(m, id=new_id(), ingest_key=f"{m.ingest_key}:{m.account_id}") for m in batch]
    await store.store_messages(batch)
    stored = [(await store.get_message(m.account_id, m.id)) for m in batch]
    threads = {(s.summary.account_id, s.summary.thread_id) for s in stored if s}
    assert len(stored) == 6 and len(threads) == 2
    assert {a for a, _ in threads} == {1, 2}
    thread_of_1 = next(t for a, t in threads if a == 1)
    assert await store.thread_messages(2, thread_of_1, limit=10) == []


async def test_grouped_listing_pages_by_newest_message_per_thread(
    store: SqlMetadataStore,
) -> None:
    inbox, sent = 10, 11
    # Thread A: 1 <- 2 <- 4 (4 in Sent); thread B: 3 <- 5; thread C: 6.
    plan = [(1, None, inbox), (2, 1, inbox), (3, None, inbox), (4, 2, sent), (5, 3, inbox)]
    plan.append((6, None, inbox))
    messages = {n: _in(_message(n, parent=p, subject=f"s{n}", at=n * 1000), f) for n, p, f in plan}
    for m in messages.values():
        await store.store_messages([m])
    rows = await store.list_threads(1, inbox, is_read=None, limit=10, after=None)
    assert [(r.latest.id, r.count) for r in rows] == [
        (messages[6].id, 1),
        (messages[5].id, 2),
        (messages[2].id, 3),
    ]
    first = await store.list_threads(1, inbox, is_read=None, limit=2, after=None)
    last = first[-1].latest
    rest = await store.list_threads(
        1, inbox, is_read=None, limit=2, after=ListCursor(last.received_at, last.id)
    )
    assert [r.latest.id for r in first + rest] == [r.latest.id for r in rows]
    # Unread only: thread B's newest unread message is 3 once 5 is read.
    await store.update_message(1, messages[5].id, MessagePatch(is_read=True))
    unread = await store.list_threads(1, inbox, is_read=False, limit=10, after=None)
    assert [r.latest.id for r in unread] == [messages[6].id, messages[3].id, messages[2].id]
    assert await store.list_threads(1, sent, is_read=None, limit=10, after=None) != []
    assert await store.list_threads(2, inbox, is_read=None, limit=10, after=None) == []
