"""``mailfleet index rebuild [--account EMAIL] [--resume]``: the search index
from stored mail, with a progress bar; Ctrl-C or SIGTERM stops it, and
``--resume`` (or ``--account``) goes on without emptying the index."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from mailfleet.cli.progress import interrupted, progress_bar, stop_on_sigterm
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
    rebuild.add_argument(
        "--resume",
        action="store_true",
        help="do not empty the index first: add what an interrupted rebuild left out",
    )
    rebuild.set_defaults(handler=_rebuild)
    common(rebuild)


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    started = time.monotonic()
    added = 0
    try:
        with stop_on_sigterm():
            account_id = None
            if args.account:
                account = await runtime.stores.directory.get_account_by_email(
                    mailbox_key(args.account)
                )
                if account is None:
                    raise NotFound(f"no account {args.account}")
                account_ids = [account.id]
                account_id = account.id
            else:
                account_ids = [a.id for a in await runtime.stores.directory.list_accounts()]
            total = 0
            for one in account_ids:
                total += sum(f.total for f in await runtime.stores.mailbox.list_folders(one))
            with progress_bar("messages") as bar:
                task = bar.add_task("index rebuild", total=total)
                added = await runtime.search.rebuild(
                    account_id,
                    resume=args.resume,
                    progress=lambda n: bar.advance(task, n),
                )
    except asyncio.CancelledError:
        return interrupted("index rebuild", "run it again with --resume to index the rest")
    finally:
        await runtime.close()
    scope = args.account or "every account"
    print(f"indexed {added} messages of {scope} in {time.monotonic() - started:.1f} s")
    return 0
