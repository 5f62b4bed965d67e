"""``mailfleet domain add|list|dkim``: the domains this server hosts, and the
DKIM key and DNS records each publishes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailfleet.config import Settings
from mailfleet.errors import BadInput, Conflict, NotFound
from mailfleet.ids import now_ms
from mailfleet.proto.addresses import normalize_domain
from mailfleet.proto.dkim import (
    check_selector,
    dns_records,
    generate_key,
    public_key_b64,
    zone_file,
)
from mailfleet.runtime import Runtime
from mailfleet.storage.interfaces import DkimKey


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
    dkim = sub.add_parser(
        "dkim",
        help="make the domain's DKIM key (once) and print the DNS records to publish",
    )
    dkim.add_argument("domain")
    dkim.add_argument(
        "--selector", help="selector of a new key (default: mf<YYYYMM>); implies a new key"
    )
    dkim.add_argument(
        "--rotate", action="store_true", help="make a new key even if the domain has one"
    )
    dkim.add_argument("--mx", help="host name of our MX for the MX record (default: smtp.hostname)")
    dkim.set_defaults(handler=_dkim)
    for parser in (add, listing, dkim):
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
        domains = await runtime.stores.directory.list_domains()
    finally:
        await runtime.close()
    for domain in domains:
        print(f"{domain.name}\t{'open-signup' if domain.open_signup else 'closed'}")
    return 0


async def _dkim(args: argparse.Namespace, settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        try:
            name = normalize_domain(args.domain)
            selector = check_selector(args.selector) if args.selector else None
        except ValueError as exc:  # DkimError is one
            raise BadInput(str(exc)) from None
        domain = await runtime.stores.directory.get_domain(name)
        if domain is None:
            raise NotFound(f"{args.domain} is not a hosted domain; add it first")
        keys = await runtime.stores.directory.dkim_keys(domain.name)
        if keys and not (args.rotate or args.selector):
            key = keys[0]
            print(f"; {domain.name} already has a key (selector {key.selector})", file=sys.stderr)
        else:
            selector = selector or f"mf{datetime.now(UTC):%Y%m}"
            if any(k.selector == selector for k in keys):
                raise Conflict(f"{domain.name} already has a key with selector {selector}")
            pem, _ = await asyncio.to_thread(generate_key)
            key = DkimKey(domain.name, selector, pem, now_ms())
            await runtime.stores.directory.add_dkim_key(key)
            print(f"; new key for {domain.name}, selector {selector}", file=sys.stderr)
    finally:
        await runtime.close()
    mx_host = args.mx or settings.smtp.hostname
    if "." not in mx_host.strip("."):
        mx_host = f"mx.{key.domain}"
        print(f"; smtp.hostname is not a public name: MX shown as {mx_host}", file=sys.stderr)
    try:
        records = dns_records(
            key.domain, key.selector, public_key_b64(key.private_key_pem), mx_host
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(zone_file(records), end="")
    return 0
