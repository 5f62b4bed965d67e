"""Mark-and-sweep in two steps, condemn then purge (decision 0018).

A run, at time ``now`` with ``cutoff = now - grace``:

1. lists the blob hashes queued items name (``error``, ``incoming``,
   ``outgoing``, ``error`` again: an item moving between two queues is in
   one of them at every moment, and is seen by one of the listings);
2. **purge**: every condemned blob condemned at or before ``cutoff``: if a
   row (``MailboxStore.blob_references``, and a quarantined mail still held:
   ``DirectoryStore.quarantine_blob_references``) or a queued item names it, it is
   restored; else its condemned copy is deleted;
3. **condemn**: live blobs in hash order from the run's cursor, written at or
   before ``cutoff``: those nothing names are condemned (still readable, but a
   put of the same content stores it live again).

Why that is safe with a writer that reuses a blob (a put that finds it live,
then a row or queue item naming it committed at most ``grace`` later): the
put came before the condemn; the purge that deletes the condemned copy runs
at least ``grace`` after the condemn, so after that commit, and finds the
name. A put after the condemn does not see the condemned copy and writes a
live one. Queues are listed before rows are probed: a consumer commits its
rows before it acks, so an item gone from the listing has its rows there.
Nothing is written on the hot paths: no count, no touch, no guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailfleet.storage.interfaces import (
    BlobStore,
    DirectoryStore,
    MailboxStore,
    Queue,
    StoredBlob,
)

log = logging.getLogger(__name__)

QUEUES = ("error", "incoming", "outgoing", "error")
# Hashes listed, probed and acted on together.
BATCH = 500


class SweepUnsafe(Exception):
    """The run could not see every root (a queue too long to list): it
    changed nothing."""


def queued_hashes(payload: dict[str, Any]) -> set[str]:
    """Every blob a queue item names: its ``*_hash`` fields (``raw_hash`` on
    ``incoming`` and ``outgoing`` items, kept on ``error``)."""
    return {v for k, v in payload.items() if k.endswith("_hash") and isinstance(v, str)}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SweepReport:
    examined: int = 0
    """Live blobs listed."""
    condemned: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    """Freed for good."""
    restored: list[str] = field(default_factory=list)
    waiting: int = 0
    """Condemned blobs not yet past the grace period."""
    after: str = ""
    """Where the next run continues its listing of live blobs; "" when this
    run reached the end (the next starts a new pass)."""
    purge_after: str = ""
    """The same for the listing of condemned blobs."""
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would be" if self.dry_run else "were"
        return (
            f"{self.examined} live blobs examined, {len(self.condemned)} {verb} condemned; "
            f"{len(self.purged)} {verb} freed, {len(self.restored)} {verb} restored, "
            f"{self.waiting} condemned still in their grace period"
        )


class BlobSweep:
    """One store's sweep. ``grace_seconds`` must exceed the longest time
    between a put and the commit of what names the blob (an SMTP session's
    queue put, worker-in's batch, the send flow): a day by default."""

    def __init__(
        self,
        mailbox: MailboxStore,
        directory: DirectoryStore,
        blobs: BlobStore,
        queue: Queue,
        *,
        grace_seconds: float,
        queue_scan_limit: int = 100_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.mailbox = mailbox
        self.directory = directory
        self.blobs = blobs
        self.queue = queue
        self.grace_ms = int(grace_seconds * 1000)
        self.queue_scan_limit = queue_scan_limit
        self.clock = clock

    async def _queued(self) -> set[str]:
        found: set[str] = set()
        for name in QUEUES:
            items = await self.queue.list(name, limit=self.queue_scan_limit + 1)
            if len(items) > self.queue_scan_limit:
                raise SweepUnsafe(
                    f"queue {name} holds more than {self.queue_scan_limit} items: "
                    "not every blob it names can be seen"
                )
            for item in items:
                found |= queued_hashes(item.payload)
        return found

    async def _named(self, hashes: Sequence[str], queued: set[str]) -> set[str]:
        unqueued = [h for h in hashes if h not in queued]
        in_rows = await self.mailbox.blob_references(unqueued)
        # Quarantined mail is in no mailbox: the directory names its raw blob.
        held = await self.directory.quarantine_blob_references(
            [h for h in unqueued if h not in in_rows]
        )
        return (set(hashes) & queued) | in_rows | held

    async def run(
        self, *, limit: int, after: str = "", purge_after: str = "", dry_run: bool = False
    ) -> SweepReport:
        """One bounded run: the purge step over at most ``limit`` condemned
        blobs after ``purge_after``, then the condemn step over at most
        ``limit`` live blobs after ``after``; the report says where the next
        run continues each."""
        report = SweepReport(dry_run=dry_run)
        cutoff = self.clock() - self.grace_ms
        # Listed after the cutoff was taken, and before any row is probed.
        queued = await self._queued()
        await self._purge(report, cutoff, queued, purge_after, limit)
        await self._condemn(report, cutoff, queued, after, limit)
        if report.purged:
            log.info("blob sweep freed %d blobs", len(report.purged))
            for blob_hash in report.purged:
                log.debug("blob sweep freed %s", blob_hash)
        return report

    async def _purge(
        self, report: SweepReport, cutoff: int, queued: set[str], after: str, limit: int
    ) -> None:
        seen = 0
        while seen < limit:
            page = await self.blobs.list_condemned(after=after, limit=min(BATCH, limit - seen))
            if not page:
                report.purge_after = ""
                return
            seen += len(page)
            after = report.purge_after = page[-1].hash
            due = [b.hash for b in page if b.at <= cutoff]
            report.waiting += len(page) - len(due)
            named = await self._named(due, queued) if due else set()
            for blob_hash in due:
                if blob_hash in named:
                    if not report.dry_run:
                        await self.blobs.restore(blob_hash)
                    report.restored.append(blob_hash)
                elif report.dry_run or await self.blobs.purge(blob_hash, condemned_before=cutoff):
                    report.purged.append(blob_hash)

    async def _condemn(
        self, report: SweepReport, cutoff: int, queued: set[str], after: str, limit: int
    ) -> None:
        while report.examined < limit:
            page: list[StoredBlob] = await self.blobs.list_blobs(
                after=after, limit=min(BATCH, limit - report.examined)
            )
            if not page:
                report.after = ""
                return
            report.examined += len(page)
            after = report.after = page[-1].hash
            old = [b.hash for b in page if b.at <= cutoff]
            named = await self._named(old, queued) if old else set()
            for blob_hash in old:
                if blob_hash not in named:
                    if not report.dry_run:
                        await self.blobs.condemn(blob_hash)
                    report.condemned.append(blob_hash)


class BlobSweeper:
    """The periodic run (in worker-out): every ``interval_seconds``, one
    bounded run continuing where the last stopped, so that a large store is
    covered over several runs; a failed run is logged and tried at the next
    interval. Several processes may sweep side by side: every step is
    idempotent, and none frees what another one's restore keeps."""

    def __init__(self, sweep: BlobSweep, *, interval_seconds: float, limit: int) -> None:
        self.sweep = sweep
        self.interval_seconds = interval_seconds
        self.limit = limit
        self.after = ""
        self.purge_after = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="blob sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> SweepReport | None:
        try:
            report = await self.sweep.run(
                limit=self.limit, after=self.after, purge_after=self.purge_after
            )
        except SweepUnsafe as exc:
            log.warning("blob sweep skipped: %s", exc)
            return None
        self.after, self.purge_after = report.after, report.purge_after
        log.info("blob sweep: %s", report.summary())
        return report

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("blob sweep failed: %s", exc)
