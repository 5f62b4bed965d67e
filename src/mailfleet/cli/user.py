"""``mailfleet user add|list|passwd|disable|hold|release``: accounts, for
administrators. A held account (outbound abuse, delivery/abuse.py) reads and
receives mail but sends nothing until released; ``list`` shows why."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
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
    hold = sub.add_parser(
        "hold", help="hold an account's sending for review (it still reads and receives)"
    )
    hold.add_argument("email")
    hold.add_argument("--reason", required=True, help="why; shown to the user and in list")
    hold.set_defaults(handler=_hold)
    release = sub.add_parser("release", help="let a held account send again")
    release.add_argument("email")
    release.set_defaults(handler=_release)
    for parser in (add, listing, passwd, disable, hold, release):
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
        if account.held_reason is not None:
            state += f", sending held since {_when(account.held_at)}: {account.held_reason}"
        print(f"{account.email}\t{account.id}\t{state}\t{account.name}")
    return 0


def _when(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _hold(args: argparse.Namespace, settings: Settings) -> int:
    reason = " ".join(args.reason.split())
    if not reason:
        raise BadInput("give a reason: the user is shown it")
    runtime = await Runtime.open(settings)
    try:
        account = await runtime.accounts.find(args.email)
        held = await runtime.sending.abuse.hold(account.id, reason)
        current = await runtime.stores.directory.get_account(account.id)
    finally:
        await runtime.close()
    if not held and current is not None:
        print(f"{account.email} was already held: {current.held_reason}")
    else:
        print(f"held sending from {account.email}: {reason}")
    return 0


async def _release(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        account = await runtime.accounts.find(args.email)
        released = await runtime.sending.abuse.release(account.id)
    finally:
        await runtime.close()
    print(f"{account.email} may send again" if released else f"{account.email} was not held")
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
