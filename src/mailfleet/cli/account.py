"""``mailfleet account move ADDRESS --to SHARD``: one account's mailbox to
another PostgreSQL shard while the service runs (decision 0016). Its writes
wait for the copy (a few seconds; past ten, they answer "try later"); the
old copy is deleted once every process has stopped reading it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from mailfleet.config import Settings
from mailfleet.storage.errors import MoveRefused
from mailfleet.storage.factory import move_account_to


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("account", help="where accounts' mailboxes live")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    move = sub.add_parser(
        "move", help="move an account's mailbox to another PostgreSQL shard, online"
    )
    move.add_argument("email", metavar="ADDRESS")
    move.add_argument("--to", required=True, metavar="SHARD", help="the shard's name")
    move.set_defaults(handler=_move)
    common(move)


async def _move(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = await move_account_to(settings, args.email.strip().lower(), args.to)
    except MoveRefused as exc:
        print(f"mailfleet: {exc}", file=sys.stderr)
        return 1
    if report.source == report.target:
        print(f"{args.email}: on {report.target} already")
        return 0
    print(
        f"{args.email}: {report.source} -> {report.target}, {report.messages} messages;"
        f" writes paused {report.writes_paused_seconds:.2f} s, {report.seconds:.1f} s in all"
    )
    return 0
