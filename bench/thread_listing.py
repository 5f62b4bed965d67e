"""Folder listing grouped by thread (``?group=thread``) on a large mailbox.

Loads N messages (default 200,000) into one account's Inbox through
``MailboxStore.store_messages`` (so thread assignment runs as in service:
new threads and replies to recent ones, about three messages a thread), then
times ``list_threads`` (first page, and a page deep in the folder by cursor)
next to the flat ``list_messages`` and next to the naive query that groups the
whole folder (what this design avoids). p50 / p99 in milliseconds.

    .venv/bin/python bench/thread_listing.py                    # 200,000
    .venv/bin/python bench/thread_listing.py --messages 20000   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mailfleet.storage.embedded.sqlite import SqliteDatabase
from mailfleet.storage.embedded.sqlite_mailbox import SqliteMailboxStore
from mailfleet.storage.interfaces import FOLDER_ROLES, Folder, ListCursor, NewMessage

ACCOUNT = 1
INBOX = 10
PAGE = 50
NEW_THREAD_SHARE = 0.35


def generate(count: int, start_ms: int) -> list[NewMessage]:
    rng = random.Random(5)
    open_threads: list[list[str]] = []  # recent threads: their Message-IDs
    out = []
    for n in range(count):
        mid = f"<{n}@bench.test>"
        if not open_threads or rng.random() < NEW_THREAD_SHARE:
            chain: list[str] = []
            open_threads.append(chain)
            open_threads[:] = open_threads[-500:]
        else:
            chain = rng.choice(open_threads)
        parent = chain[-1] if chain else None
        subject = f"{'Re: ' if parent else ''}topic {len(open_threads)}-{n % 997}"
        out.append(
            NewMessage(
                account_id=ACCOUNT,
                id=10_000_000 + n,
                folder_id=INBOX,
                thread_id=10_000_000 + n,
                received_at=start_ms + n * 60_000,
                ingest_key=str(n),
                sender=None,
                to=(),
                cc=(),
                bcc=(),
                subject=subject,
                snippet="",
                message_id_header=mid,
                in_reply_to=parent,
                references=tuple(chain[-5:]),
                raw_hash="ab" * 32,
                raw_size=1,
                body_hash=None,
                html_hash=None,
                is_read=rng.random() > 0.3,
            )
        )
        chain.append(mid)
    return out


async def timed(call: Callable[[], Awaitable[Any]], iterations: int) -> tuple[float, float]:
    for _ in range(5):
        await call()
    samples = []
    for _ in range(iterations):
        t = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        path = Path(tmp) / "metadata.sqlite"
        store = SqliteMailboxStore(SqliteDatabase(path))
        await store.open()
        await store.create_mailbox(
            ACCOUNT, [Folder(ACCOUNT, INBOX + i, r, r, 0, 0) for i, r in enumerate(FOLDER_ROLES)]
        )
        messages = generate(args.messages, 1_700_000_000_000)
        t = time.perf_counter()
        for start in range(0, len(messages), 1000):
            await store.store_messages(messages[start : start + 1000])
        load = time.perf_counter() - t
        with sqlite3.connect(path) as db:
            threads = db.execute("SELECT COUNT(DISTINCT thread_id) FROM messages").fetchone()[0]
        print(
            f"{args.messages} messages in {threads} threads loaded in {load:.1f} s"
            f" ({load / args.messages * 1e6:.0f} µs a message, thread assignment included)"
        )

        deep: ListCursor | None = None
        for _ in range(100):  # cursor of page 101
            rows = await store.list_threads(ACCOUNT, INBOX, is_read=None, limit=PAGE, after=deep)
            deep = ListCursor(rows[-1].latest.received_at, rows[-1].latest.id)
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (
                "flat list_messages, first page",
                lambda: store.list_messages(ACCOUNT, INBOX, is_read=None, limit=PAGE, after=None),
            ),
            (
                "group=thread, first page",
                lambda: store.list_threads(ACCOUNT, INBOX, is_read=None, limit=PAGE, after=None),
            ),
            (
                "group=thread, page 101 by cursor",
                lambda: store.list_threads(ACCOUNT, INBOX, is_read=None, limit=PAGE, after=deep),
            ),
            (
                "group=thread, unread, first page",
                lambda: store.list_threads(ACCOUNT, INBOX, is_read=False, limit=PAGE, after=None),
            ),
        ]
        for name, call in cases:
            p50, p99 = await timed(call, args.iterations)
            print(f"{name:40s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")

        naive = (
            "SELECT thread_id, MAX(received_at) AS latest, COUNT(*) FROM messages"
            " WHERE account_id = ? AND folder_id = ? GROUP BY thread_id"
            " ORDER BY latest DESC LIMIT 50"
        )
        with sqlite3.connect(path) as db:
            t = time.perf_counter()
            for _ in range(5):
                db.execute(naive, (ACCOUNT, INBOX)).fetchall()
            per_page = (time.perf_counter() - t) / 5 * 1000
            print(f"{'naive GROUP BY over the folder':40s} {per_page:7.2f} ms a page")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
