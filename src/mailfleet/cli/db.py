"""``mailfleet db upgrade|status``: the metadata schema, migrated once per
fleet rather than by every process that starts.

``upgrade`` brings every metadata database the settings name (on PostgreSQL:
the directory and every shard) to the newest
revision this mailfleet knows and prints each one's revision before and after;
``status`` prints each one's revision against that newest one, and exits 1
when any is not at it. Processes started with ``storage.migrate_on_start =
false`` refuse a database that is not (``storage/migrations`` ``ensure_schema``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mailfleet.config import Settings
from mailfleet.storage.factory import metadata_states, upgrade_metadata
from mailfleet.storage.migrations import SchemaState


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("db", help="the metadata database schema")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = sub.add_parser(
        "upgrade", help="migrate every metadata database to the newest schema revision"
    )
    upgrade.set_defaults(handler=_upgrade)
    common(upgrade)
    status = sub.add_parser(
        "status", help="each metadata database's schema revision against the newest"
    )
    status.set_defaults(handler=_status)
    common(status)


def _revision(revision: str | None) -> str:
    return revision or "none"


async def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    for before, after in await upgrade_metadata(settings):
        if before.current == after.current:
            print(f"{after.database}: at {_revision(after.current)}, up to date")
        else:
            print(f"{after.database}: {_revision(before.current)} -> {after.current}")
    return 0


def _describe(state: SchemaState) -> str:
    where = f"{state.database}: {_revision(state.current)} (newest {state.head})"
    if not state.known:
        return f"{where}, newer than this mailfleet"
    if not state.up_to_date:
        return f"{where}, needs `mailfleet db upgrade`"
    return f"{where}, up to date"


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    states = await metadata_states(settings)
    for state in states:
        print(_describe(state))
    return 0 if all(s.up_to_date for s in states) else 1
