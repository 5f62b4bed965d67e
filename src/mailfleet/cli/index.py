"""``mailfleet index rebuild [--account EMAIL]``: the search index from stored mail."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from mailfleet.config import Settings
from mailfleet.errors import NotFound
from mailfleet.proto.addresses import mailbox_key
from mailfleet.runtime import Runtime


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("index", help="the full-text search index")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = sub.add_parser(
        "rebuild",
        help="index stored mail: every account (the index is emptied first) or one",
    )
    rebuild.add_argument("--account", metavar="EMAIL", help="only this account's mail")
    rebuild.set_defaults(handler=_rebuild)
    common(rebuild)


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        account_id = None
        if args.account:
            account = await runtime.stores.directory.get_account_by_email(mailbox_key(args.account))
            if account is None:
                raise NotFound(f"no account {args.account}")
            account_id = account.id
        started = time.monotonic()
        added = await runtime.search.rebuild(account_id)
    finally:
        await runtime.close()
    scope = args.account or "every account"
    print(f"indexed {added} messages of {scope} in {time.monotonic() - started:.1f} s")
    return 0
