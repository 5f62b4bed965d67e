"""``mailfleet blobs sweep [--grace SECONDS] [--dry-run] [--limit N]``: free the
blobs no message, upload or queued item names any more (decision 0018).

A blob nothing names is condemned by one sweep and freed by a sweep at least
the grace period later, if nothing names it then: mail deleted for good is
freed by the second sweep after the grace. The periodic run in worker-out
does the same, a bounded part of the store each hour."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from mailfleet.blobs import BlobSweep, SweepReport, SweepUnsafe
from mailfleet.config import Settings
from mailfleet.errors import MailfleetError
from mailfleet.storage.factory import StorageRole, create_stores


class SweepRefused(MailfleetError):
    code = "sweep_refused"
    status = 409


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("blobs", help="the blob store's lifecycle")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    sweep = sub.add_parser(
        "sweep",
        help="condemn blobs nothing names, free those condemned past the grace period",
    )
    sweep.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="age before a blob is condemned, and before a condemned one is freed "
        "(default: blobs.grace_seconds)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="report, change nothing")
    sweep.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="live blobs to examine (default: the whole store, in runs of blobs.sweep_limit)",
    )
    sweep.set_defaults(handler=_sweep)
    common(sweep)


async def _sweep(args: argparse.Namespace, settings: Settings) -> int:
    grace = settings.blobs.grace_seconds if args.grace is None else args.grace
    if grace <= 0:
        raise SweepRefused("--grace must be positive: it is what keeps a blob being reused")
    stores = create_stores(settings)
    opened: list[StorageRole] = [stores.directory, stores.mailbox, stores.blobs, stores.queue]
    for store in opened:
        await store.open()
    try:
        sweep = BlobSweep(
            stores.mailbox,
            stores.directory,
            stores.blobs,
            stores.queue,
            grace_seconds=grace,
            queue_scan_limit=settings.blobs.queue_scan_limit,
        )
        total = SweepReport(dry_run=args.dry_run)
        started = time.monotonic()
        after = purge_after = ""
        left = args.limit
        while True:
            step = (
                settings.blobs.sweep_limit
                if left is None
                else min(left, settings.blobs.sweep_limit)
            )
            try:
                report = await sweep.run(
                    limit=step, after=after, purge_after=purge_after, dry_run=args.dry_run
                )
            except SweepUnsafe as exc:
                raise SweepRefused(str(exc)) from exc
            _add(total, report)
            after, purge_after = report.after, report.purge_after
            if left is not None:
                left -= report.examined
            if (not after and not purge_after) or (left is not None and left <= 0):
                break
    finally:
        for store in reversed(opened):
            await store.close()
    for blob_hash in total.purged:
        print(f"{'would free' if args.dry_run else 'freed'} {blob_hash}")
    print(f"{total.summary()} in {time.monotonic() - started:.1f} s")
    return 0


def _add(total: SweepReport, report: SweepReport) -> None:
    total.examined += report.examined
    total.condemned += report.condemned
    # A dry run changes nothing: a purge step that starts over reports the
    # same blobs again.
    total.purged += [h for h in report.purged if h not in set(total.purged)]
    total.restored += [h for h in report.restored if h not in set(total.restored)]
    total.waiting += report.waiting
