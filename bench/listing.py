"""Folder listing and message fetch on a large mailbox (issue 2).

Loads N messages (default 1,000,000) into the Inbox of one account through the
storage layer (``MailboxStore.store_messages``, no raw SQL), then measures the
latency of four reads on the embedded store (SQLite through SQLAlchemy +
aiosqlite, as the service runs it):

- "first page of Inbox": ``list_messages(inbox, is_read=None, limit=50)``;
- "first page of unread": the same with ``is_read=False`` (about 30% unread);
- "page 1000 by cursor": ``list_messages(..., after=cursor)`` where the cursor
  is the last row of page 999 (found once by walking the pages, then only the
  fetch of page 1000 is timed; with fewer than 50,000 messages, the deepest
  full page instead);
- "get message": ``get_message`` of a random loaded message.

Each is run ``--iterations`` times (default 2,000) after a short warm-up,
timed with ``time.perf_counter`` around the awaited call in the same event
loop, and reported as p50 / p99 / max in milliseconds against the target of
the issue: p99 under 10 ms.

Run from the repository root::

    .venv/bin/python bench/listing.py                      # 1,000,000 messages
    .venv/bin/python bench/listing.py --messages 20000     # a quick check
    .venv/bin/python bench/listing.py --data-dir /var/tmp/mf-bench --keep

The data goes to a new directory under /var/tmp, deleted at the end unless
``--keep`` (about 0.7 GB at 1,000,000 messages). ``--data-dir`` reuses a
directory: messages already loaded there are kept and only the missing ones
are added, so a re-run on a kept directory skips the load. A directory that
existed before the run is never deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mailfleet.accounts.service import AccountService
from mailfleet.config import Settings, load_settings
from mailfleet.ids import new_id
from mailfleet.proto.addresses import Address
from mailfleet.storage.embedded.sqlite import sqlite_path
from mailfleet.storage.factory import Stores, create_stores
from mailfleet.storage.interfaces import (
    Account,
    Folder,
    ListCursor,
    MailboxStore,
    NewMessage,
)

DOMAIN = "bench.test"
EMAIL = f"bench@{DOMAIN}"
PASSWORD = "benchpassword"
PAGE = 50
TARGET_MS = 10.0
SPAN_MS = 2 * 365 * 24 * 3600 * 1000  # received_at spread over the last two years
UNREAD_SHARE = 0.30
FAKE_HASH = "ab" * 32  # no blobs are written: listings and get_message never read them


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = words(
    "Alice Bob Carol David Emma Farid Grace Hiro Ines Jonas Kofi Lena Maria Nadia Omar "
    "Paula Quentin Rosa Sven Tariq Uma Victor Wen Ximena Yusuf Zoe"
)
LAST_NAMES = words(
    "Martin Smith Garcia Müller Rossi Nguyen Kowalski Tanaka Silva Dubois Novak Jensen "
    "Okafor Haddad Schmidt Lopez Ivanova Berg Costa Moreau"
)
SENDER_DOMAINS = words(
    "example.com example.org mail.example.net lists.example.io shop.example "
    "news.example.co.uk bank.example university.example.edu"
)
SUBJECTS = (
    "Re: {topic}",
    "Fwd: {topic}",
    "{topic}",
    "Your {thing} is ready",
    "Reminder: {topic} on {day}",
    "Invoice {num} for {thing}",
    "Meeting notes: {topic}",
    "[{list}] {topic}",
    "Question about {thing}",
    "Weekly update: {topic}",
)
TOPICS = (
    "quarterly planning",
    "the budget review",
    "holiday schedule",
    "release 2.4",
    "team offsite",
    "server migration",
    "contract renewal",
    "design review",
    "hiring plan",
    "the new office",
    "customer feedback",
    "security audit",
)
THINGS = ("order", "report", "subscription", "ticket", "booking", "statement", "parcel", "invoice")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
LISTS = ("dev", "announce", "ops", "users", "security")
SNIPPET_WORDS = words(
    "hi thanks for the update please find attached the latest version of our "
    "document let me know if you have any questions we should meet next week "
    "to discuss the details and agree on a plan the numbers look good so far "
    "but there are a few open points I would like to go over with you before "
    "we send it to the rest of the team best regards"
)


@dataclass(frozen=True, slots=True)
class Stats:
    name: str
    p50: float
    p99: float
    max: float

    @property
    def passed(self) -> bool:
        return self.p99 < TARGET_MS


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# -- machine ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> list[tuple[str, str]]:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return [
        ("nproc", str(nproc)),
        ("CPU", cpu_model()),
        ("memory", mem),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("SQLAlchemy", version("sqlalchemy")),
        ("aiosqlite", version("aiosqlite")),
    ]


# -- data -------------------------------------------------------------------------


class MessageFactory:
    """Plausible summaries, deterministic for a seed."""

    def __init__(self, account_id: int, folder_id: int, seed: int) -> None:
        self.account_id = account_id
        self.folder_id = folder_id
        self.rng = random.Random(seed)
        rng = self.rng
        self.people = [
            Address(
                f"{first.lower()}.{last.lower()}@{rng.choice(SENDER_DOMAINS)}".replace("ü", "ue"),
                f"{first} {last}",
            )
            for first in FIRST_NAMES
            for last in LAST_NAMES
        ]
        self.me = Address(EMAIL, "Bench")

    def subject(self) -> str:
        rng = self.rng
        return rng.choice(SUBJECTS).format(
            topic=rng.choice(TOPICS),
            thing=rng.choice(THINGS),
            day=rng.choice(DAYS),
            num=rng.randrange(10_000, 99_999),
            list=rng.choice(LISTS),
        )

    def snippet(self) -> str:
        rng = self.rng
        start = rng.randrange(len(SNIPPET_WORDS) - 20)
        words = SNIPPET_WORDS[start : start + rng.randrange(12, 20)]
        return " ".join(words).capitalize()[:140]

    def make(self, received_at: int) -> NewMessage:
        rng = self.rng
        message_id = new_id()
        others = rng.sample(self.people, rng.choice((0, 0, 0, 1, 2)))
        return NewMessage(
            account_id=self.account_id,
            id=message_id,
            folder_id=self.folder_id,
            thread_id=message_id,
            received_at=received_at,
            ingest_key=f"bench:{message_id}",
            sender=rng.choice(self.people),
            to=(self.me, *others),
            cc=(),
            bcc=(),
            subject=self.subject(),
            snippet=self.snippet(),
            message_id_header=f"<{message_id}@{DOMAIN}>",
            in_reply_to=None,
            references=(),
            raw_hash=FAKE_HASH,
            raw_size=rng.randrange(2_000, 80_000),
            body_hash=FAKE_HASH,
            html_hash=None,
            is_read=rng.random() >= UNREAD_SHARE,
            is_flagged=rng.random() < 0.02,
        )


async def ensure_account(stores: Stores, settings: Settings) -> tuple[Account, Folder]:
    account = await stores.directory.get_account_by_email(EMAIL)
    if account is None:
        service = AccountService(
            stores.directory, stores.mailbox, settings.auth, stores.events, stores.cache
        )
        if await stores.directory.get_domain(DOMAIN) is None:
            await service.add_domain(DOMAIN)
        account = await service.add_user(EMAIL, PASSWORD, "Bench")
    inbox = await stores.mailbox.folder_by_role(account.id, "inbox")
    return account, inbox


async def load(
    store: MailboxStore, account: Account, inbox: Folder, count: int, batch: int
) -> list[int]:
    """Stores ``count`` more messages in the Inbox, oldest first, received after
    those already there; returns their ids."""
    now = int(time.time() * 1000)
    start = now - SPAN_MS
    newest = await store.list_messages(account.id, inbox.id, is_read=None, limit=1, after=None)
    if newest:
        start = max(start, newest[0].received_at + 1)
    step = max(now - start, 0) / max(count, 1)
    factory = MessageFactory(account.id, inbox.id, seed=inbox.total)
    ids: list[int] = []
    t0 = time.perf_counter()
    last_report = t0
    for first in range(0, count, batch):
        chunk = [
            factory.make(int(start + (first + i) * step)) for i in range(min(batch, count - first))
        ]
        ids.extend(await store.store_messages(chunk))
        now_t = time.perf_counter()
        if now_t - last_report >= 15 or len(ids) == count:
            last_report = now_t
            rate = len(ids) / (now_t - t0)
            print(f"  loaded {len(ids):>9,} / {count:,}  {rate:,.0f} msg/s", flush=True)
    return ids


async def all_ids(store: MailboxStore, account: Account, inbox: Folder) -> list[int]:
    """Every message id of the Inbox, read back through ``list_messages``."""
    ids: list[int] = []
    cursor: ListCursor | None = None
    while True:
        rows = await store.list_messages(
            account.id, inbox.id, is_read=None, limit=5_000, after=cursor
        )
        ids.extend(r.id for r in rows)
        if len(rows) < 5_000:
            return ids
        cursor = ListCursor(rows[-1].received_at, rows[-1].id)


# -- measurement ------------------------------------------------------------------


async def measure(
    name: str, op: Callable[[], Awaitable[Any]], iterations: int, warmup: int
) -> Stats:
    for _ in range(warmup):
        await op()
    samples: list[float] = []
    perf = time.perf_counter
    for _ in range(iterations):
        t0 = perf()
        await op()
        samples.append((perf() - t0) * 1000)
    samples.sort()
    return Stats(name, percentile(samples, 50), percentile(samples, 99), samples[-1])


def db_size(settings: Settings) -> str:
    path = sqlite_path(settings.storage_url("metadata_url"))
    parts = []
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            size = p.stat().st_size
            total += size
            parts.append(f"{p.name} {size / 2**20:,.1f} MiB")
    return f"{total / 2**20:,.1f} MiB ({', '.join(parts)})"


async def run(args: argparse.Namespace, data_dir: Path) -> bool:
    print("machine:")
    for key, value in machine_facts():
        print(f"  {key:<11} {value}")
    print(f"data dir:    {data_dir}")

    settings = load_settings(None, {"data_dir": str(data_dir)})
    stores = create_stores(settings)
    await stores.open()
    try:
        store = stores.mailbox
        account, inbox = await ensure_account(stores, settings)
        missing = max(0, args.messages - inbox.total)
        if missing:
            print(
                f"loading {missing:,} messages into {EMAIL} Inbox "
                f"(batches of {args.batch:,}, {inbox.total:,} there already)"
            )
            t0 = time.perf_counter()
            ids = await load(store, account, inbox, missing, args.batch)
            elapsed = time.perf_counter() - t0
            rate = missing / elapsed
            print(f"load: {missing:,} messages in {elapsed:,.1f} s = {rate:,.0f} msg/s")
            inbox = await store.folder_by_role(account.id, "inbox")
            if inbox.total != len(ids):
                ids = await all_ids(store, account, inbox)
        else:
            print(f"load: skipped, the Inbox holds {inbox.total:,} messages already")
            ids = await all_ids(store, account, inbox)
        print(f"inbox: {inbox.total:,} messages, {inbox.unread:,} unread")
        print(f"metadata db: {db_size(settings)}")

        target_page = min(1000, inbox.total // PAGE)
        if target_page < 2:
            raise SystemExit(f"the Inbox needs at least {2 * PAGE} messages")
        page_name = f"page {target_page} by cursor"
        t0 = time.perf_counter()
        cursor: ListCursor | None = None
        for _ in range(target_page - 1):
            rows = await store.list_messages(
                account.id, inbox.id, is_read=None, limit=PAGE, after=cursor
            )
            cursor = ListCursor(rows[-1].received_at, rows[-1].id)
        assert cursor is not None
        walk = time.perf_counter() - t0
        print(
            f"walk to page {target_page - 1}: {walk:,.2f} s "
            f"({walk / (target_page - 1) * 1000:.2f} ms/page), cursor {cursor}"
        )

        rng = random.Random(2)
        aid, fid = account.id, inbox.id
        page_cursor = cursor

        async def first_page() -> None:
            rows = await store.list_messages(aid, fid, is_read=None, limit=PAGE, after=None)
            assert len(rows) == PAGE

        async def first_unread() -> None:
            rows = await store.list_messages(aid, fid, is_read=False, limit=PAGE, after=None)
            assert len(rows) == PAGE

        async def page_n() -> None:
            rows = await store.list_messages(aid, fid, is_read=None, limit=PAGE, after=page_cursor)
            assert len(rows) == PAGE

        async def get_message() -> None:
            message = await store.get_message(aid, rng.choice(ids))
            assert message is not None

        warmup = max(10, min(200, args.iterations // 10))
        load1, load5, _ = os.getloadavg()
        print(f"load average before measuring: {load1:.2f} (1 min), {load5:.2f} (5 min)")
        print(f"measuring: {args.iterations:,} iterations each after {warmup} warm-up calls")
        results = []
        for name, op in (
            ("first page of Inbox", first_page),
            ("first page of unread", first_unread),
            (page_name, page_n),
            ("get message", get_message),
        ):
            gc.collect()
            stats = await measure(name, op, args.iterations, warmup)
            results.append(stats)
            print(f"  {name:<22} p50 {stats.p50:7.3f} ms  p99 {stats.p99:7.3f} ms", flush=True)
    finally:
        await stores.close()

    print()
    print(f"| operation | p50 (ms) | p99 (ms) | max (ms) | p99 < {TARGET_MS:g} ms |")
    print("|---|---:|---:|---:|---|")
    for s in results:
        verdict = "PASS" if s.passed else "FAIL"
        print(f"| {s.name} | {s.p50:.3f} | {s.p99:.3f} | {s.max:.3f} | {verdict} |")
    ok = all(s.passed for s in results)
    print()
    print(f"verdict: {'PASS' if ok else 'FAIL'} (target: p99 < {TARGET_MS:g} ms for each)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the Inbox")
    parser.add_argument("--iterations", type=int, default=2_000, help="timed calls per operation")
    parser.add_argument("--batch", type=int, default=5_000, help="messages per store_messages()")
    parser.add_argument("--data-dir", type=Path, help="reuse this directory (created if absent)")
    parser.add_argument(
        "--keep", action="store_true", help="do not delete the data directory it created"
    )
    args = parser.parse_args(argv)

    created = True
    if args.data_dir is not None:
        data_dir = args.data_dir.resolve()
        created = not data_dir.exists()
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="mailfleet-bench-", dir="/var/tmp"))
    try:
        ok = asyncio.run(run(args, data_dir))
    finally:
        if args.keep or not created:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"deleted {data_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
