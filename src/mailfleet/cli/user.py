"""``mailfleet user add|list|passwd|disable``: accounts, for administrators."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from mailfleet.config import Settings
from mailfleet.errors import BadInput
from mailfleet.runtime import Runtime


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("user", help="accounts")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="create an account on a hosted domain")
    add.add_argument("email")
    add.add_argument("--name", default="", help="display name")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="list accounts")
    listing.add_argument("--domain", help="only this domain's")
    listing.set_defaults(handler=_list)
    passwd = sub.add_parser("passwd", help="set a new password (ends the account's sessions)")
    passwd.add_argument("email")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_passwd)
    disable = sub.add_parser("disable", help="disable an account (ends its sessions)")
    disable.add_argument("email")
    disable.add_argument("--enable", action="store_true", help="enable it again instead")
    disable.set_defaults(handler=_disable)
    for parser in (add, listing, passwd, disable):
        common(parser)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise BadInput("the passwords differ")
    if not password:
        raise BadInput("empty password")
    return password


async def _add(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args.password_stdin)
    runtime = await Runtime.open(settings)
    try:
        account = await runtime.accounts.add_user(args.email, password, args.name)
    finally:
        await runtime.close()
    print(f"added {account.email} (id {account.id})")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        accounts = await runtime.stores.directory.list_accounts(args.domain)
    finally:
        await runtime.close()
    for account in accounts:
        state = "disabled" if account.disabled else "active"
        print(f"{account.email}\t{account.id}\t{state}\t{account.name}")
    return 0


async def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args.password_stdin)
    runtime = await Runtime.open(settings)
    try:
        await runtime.accounts.set_password(args.email, password)
    finally:
        await runtime.close()
    print(f"password of {args.email} changed")
    return 0


async def _disable(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        await runtime.accounts.set_disabled(args.email, not args.enable)
    finally:
        await runtime.close()
    print(f"{args.email} {'enabled' if args.enable else 'disabled'}")
    return 0
