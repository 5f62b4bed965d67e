"""``mailfleet quarantine list|show|release|delete``: inbound mail a filter
quarantined (a virus, a blocked attachment), kept in no folder until an
administrator decides (decision 0021). Entries stay listed after release or
delete, with their status, as the record of what was done."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailfleet.config import Settings
from mailfleet.errors import BadInput
from mailfleet.ids import parse_id
from mailfleet.runtime import Runtime
from mailfleet.storage.interfaces import QUARANTINE_STATUSES, QuarantinedMail


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("quarantine", help="quarantined inbound mail (viruses ...)")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="quarantined mail, newest first")
    listing.add_argument(
        "--status",
        choices=(*QUARANTINE_STATUSES, "all"),
        default="held",
        help="which entries (default: held, waiting for a decision)",
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--before", default=None, metavar="ID", help="the page after ID")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one entry in full")
    show.add_argument("id")
    show.add_argument("--raw", action="store_true", help="print the mail as received")
    show.set_defaults(handler=_show)
    release = sub.add_parser("release", help="deliver to the recipients' Inboxes, once")
    release.add_argument("id")
    release.set_defaults(handler=_release)
    delete = sub.add_parser("delete", help="drop the mail (its raw blob is freed by the sweep)")
    delete.add_argument("id")
    delete.set_defaults(handler=_delete)
    for parser in (listing, show, release, delete):
        common(parser)


def _when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(text: str) -> int:
    found = parse_id(text)
    if found is None:
        raise BadInput(f"not a quarantine id: {text!r}")
    return found


def _shown(entry: QuarantinedMail) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "status": entry.status,
        "received_at": _when(entry.received_at),
        "quarantined_at": _when(entry.quarantined_at),
        "resolved_at": _when(entry.resolved_at),
        "mail_from": entry.mail_from,
        "recipients": list(entry.recipients),
        "client_ip": entry.client_ip,
        "helo": entry.helo,
        "from": entry.sender,
        "subject": entry.subject,
        "size": entry.raw_size,
        "raw_hash": entry.raw_hash,
        "verdict": entry.verdict,
        "score": entry.score,
        "reasons": [{"name": r.name, "score": r.score, "detail": r.detail} for r in entry.reasons],
    }


def _line(entry: QuarantinedMail) -> str:
    why = "; ".join(f"{r.name}: {r.detail}" if r.detail else r.name for r in entry.reasons)
    return "\t".join(
        [
            str(entry.id),
            _when(entry.quarantined_at) or "",
            entry.status,
            entry.mail_from or "<>",
            ",".join(entry.recipients),
            json.dumps(entry.subject, ensure_ascii=False),
            why,
        ]
    )


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    before = _id(args.before) if args.before else None
    status = None if args.status == "all" else args.status
    runtime = await Runtime.open(settings)
    try:
        entries = await runtime.quarantine.entries(status=status, before=before, limit=args.limit)
    finally:
        await runtime.close()
    for entry in entries:
        if args.json:
            print(json.dumps(_shown(entry), ensure_ascii=False))
        else:
            print(_line(entry))
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        entry = await runtime.quarantine.get(_id(args.id))
        raw = await runtime.quarantine.raw(entry) if args.raw else None
    finally:
        await runtime.close()
    if raw is not None:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
    else:
        print(json.dumps(_shown(entry), indent=2, ensure_ascii=False))
    return 0


async def _release(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        delivered = await runtime.quarantine.release(_id(args.id))
    finally:
        await runtime.close()
    print(f"released {args.id} to {', '.join(delivered) or 'nobody (no mailbox left)'}")
    return 0


async def _delete(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        await runtime.quarantine.delete(_id(args.id))
    finally:
        await runtime.close()
    print(f"deleted {args.id}")
    return 0
