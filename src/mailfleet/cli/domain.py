"""``mailfleet domain add|list``: the domains this server hosts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mailfleet.config import Settings
from mailfleet.runtime import Runtime


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("domain", help="hosted domains")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="host a domain")
    add.add_argument("domain")
    add.add_argument(
        "--open-signup", action="store_true", help="let anyone sign up on it through the API"
    )
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="list hosted domains")
    listing.set_defaults(handler=_list)
    for parser in (add, listing):
        common(parser)


async def _add(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        domain = await runtime.accounts.add_domain(args.domain, open_signup=args.open_signup)
    finally:
        await runtime.close()
    print(f"added {domain.name}" + (" (open sign-up)" if domain.open_signup else ""))
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        domains = await runtime.stores.metadata.list_domains()
    finally:
        await runtime.close()
    for domain in domains:
        print(f"{domain.name}\t{'open-signup' if domain.open_signup else 'closed'}")
    return 0
