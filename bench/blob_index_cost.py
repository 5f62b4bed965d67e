"""What the blob-reference indexes (migration 0009, decision 0018) cost
worker-in's store step on SQLite, and the blob pack's upsert against the
plain insert it replaced.

    PYTHONPATH=. .venv/bin/python bench/blob_index_cost.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tests.contract.mailboxes import mail, new_box

import mailfleet.storage.embedded.files as files
from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.embedded.sqlite import SqliteDatabase
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex

INDEXES = (
    "ix_messages_raw_hash",
    "ix_messages_body_hash",
    "ix_messages_html_hash",
    "ix_message_attachments_blob",
    "ix_uploads_blob",
)


def _hash(n: int, kind: str) -> str:
    return hashlib.sha256(f"{kind}{n}".encode()).hexdigest()


async def copies_per_second(*, with_indexes: bool) -> float:
    """120 worker-in batches of 64 copies, stored 8 at a time as concurrent
    calls (they share the writer's commits), over 20 accounts."""
    path = Path(tempfile.mkdtemp()) / "metadata.sqlite"
    database = SqliteDatabase(path)
    search = SqliteSearchIndex(database)
    store = SqliteMailboxStore(database, search=search)
    await store.open()
    await search.open()
    if not with_indexes:
        with sqlite3.connect(path) as conn:
            for name in INDEXES:
                conn.execute(f"DROP INDEX {name}")
    boxes = [await new_box(store) for _ in range(20)]
    n = 0
    started = time.perf_counter()
    for _ in range(120):
        batch = []
        for j in range(64):
            n += 1
            batch.append(
                replace(
                    mail(boxes[j % 20]),
                    raw_hash=_hash(n, "raw"),
                    body_hash=_hash(n, "text"),
                    html_hash=_hash(n, "html"),
                )
            )
        await asyncio.gather(*(store.store_messages(batch[k : k + 8]) for k in range(0, 64, 8)))
    elapsed = time.perf_counter() - started
    await search.close()
    await store.close()
    return n / elapsed


async def puts_per_second(*, upsert: bool) -> float:
    """2,000 puts of 4 KiB into the pack, 20 at a time (SMTP sessions)."""
    saved = files._PACK_PUT
    if not upsert:
        files._PACK_PUT = "INSERT OR IGNORE INTO blobs (hash, data, written_at) VALUES (?, ?, ?)"
    store = FileBlobStore(Path(tempfile.mkdtemp()) / "blobs")
    await store.open()
    try:
        started = time.perf_counter()
        for _ in range(100):
            await asyncio.gather(*(store.put(os.urandom(4096)) for _ in range(20)))
        return 2000 / (time.perf_counter() - started)
    finally:
        await store.close()
        files._PACK_PUT = saved


async def main() -> None:
    for _ in range(3):
        with_indexes = await copies_per_second(with_indexes=True)
        without = await copies_per_second(with_indexes=False)
        print(
            f"store_messages: {with_indexes:.0f} copies/s with the indexes, {without:.0f} without"
        )
    for _ in range(3):
        upsert = await puts_per_second(upsert=True)
        plain = await puts_per_second(upsert=False)
        print(f"pack puts: {upsert:.0f}/s upsert, {plain:.0f}/s insert or ignore")


if __name__ == "__main__":
    asyncio.run(main())
