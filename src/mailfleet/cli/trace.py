"""``mailfleet trace ID``: the path of one mail through the roles, read back
from the JSON logs (decision 0029).

``ID`` is anything a hop line names: a Message-ID (with or without its angle
brackets), a queue id (the one smtp-in answers with 250, or a queue item's
id from ``mailfleet queue list``), a mailfleet message id, or the
correlation id itself. Every record naming it gives its ``trace_id``; every
record of those traces is printed in time order, with the time since the
first. The logs are the files ``--logs`` names (paths or globs, as many as
the hops were spread over: a fleet's one per process), else
``[logging] trace_logs``, else ``[logging] file``. Lines that are not JSON
objects (a process's start lines, another program's log) are skipped.
"""

from __future__ import annotations

import argparse
import glob
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from mailfleet.config import Settings
from mailfleet.errors import NotFound
from mailfleet.logs import TRACE_KEY

SHOWN_FIRST = ("timestamp", "level", "logger", "event", TRACE_KEY)


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "trace", help="every hop of one mail, from the JSON logs, with times"
    )
    parser.add_argument("id", help="a Message-ID, a queue id, a mailfleet message id or a trace id")
    parser.add_argument(
        "--logs",
        action="append",
        default=[],
        metavar="PATH_OR_GLOB",
        help="JSON log files to read (repeat; default: [logging] trace_logs, else [logging] file)",
    )
    parser.add_argument("--width", type=int, default=None, help="columns (default: terminal)")
    common(parser)
    parser.set_defaults(handler=_trace)


def log_files(patterns: list[str], settings: Settings) -> list[Path]:
    """The files the patterns name, else the configuration's."""
    if not patterns:
        patterns = list(settings.logging.trace_logs)
        if not patterns and settings.logging.file is not None:
            patterns = [str(settings.logging.file)]
    if not patterns:
        raise NotFound(
            "no log files to read: give --logs PATH, or set [logging] file or trace_logs"
        )
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for match in matches:
            if Path(match).is_file():
                found[Path(match)] = None
    if not found:
        raise NotFound(f"no log file at {', '.join(patterns)}")
    return list(found)


def _records(files: list[Path], needles: tuple[str, ...]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The JSON objects of lines holding one of ``needles`` as text."""
    encoded = tuple(n.encode() for n in needles)
    for path in files:
        with open(path, "rb") as lines:
            for line in lines:
                if not line.startswith(b"{") or not any(n in line for n in encoded):
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    yield path, record


def _names(record: dict[str, Any], wanted: set[str]) -> bool:
    return any(
        str(value) in wanted
        for key, value in record.items()
        if key not in ("timestamp", "level", "logger", "event")
    )


def find_hops(ident: str, files: list[Path]) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Trace id → its records in time order, for every trace a record naming
    ``ident`` belongs to (records naming it but no trace: under "")."""
    ident = ident.strip()
    bare = ident.strip("<>")
    wanted = {ident, bare, f"<{bare}>"}
    traces: set[str] = set()
    untraced: list[tuple[Path, dict[str, Any]]] = []
    for path, record in _records(files, (bare,)):
        if _names(record, wanted):
            if record.get(TRACE_KEY):
                traces.add(str(record[TRACE_KEY]))
            else:
                untraced.append((path, record))
    hops: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    if traces:
        for path, record in _records(files, tuple(traces)):
            trace = str(record.get(TRACE_KEY, ""))
            if trace in traces:
                hops.setdefault(trace, []).append((path, record))
    if untraced:
        hops[""] = untraced
    for records in hops.values():
        records.sort(key=lambda pair: str(pair[1].get("timestamp", "")))
    return hops


def _when(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("timestamp", "")))
    except ValueError:
        return None


def _detail(record: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v}" for k, v in record.items() if k not in SHOWN_FIRST)


async def _trace(args: argparse.Namespace, settings: Settings) -> int:
    files = log_files(args.logs, settings)
    hops = find_hops(args.id, files)
    if not hops:
        raise NotFound(f"no log line names {args.id!r} in {', '.join(str(f) for f in files)}")
    console = Console(width=args.width, highlight=False)
    several_files = len(files) > 1
    for trace, records in sorted(hops.items(), key=lambda t: str(t[1][0][1].get("timestamp"))):
        first = _when(records[0][1])
        table = Table(
            title=f"trace {trace}" if trace else f"lines naming {args.id} (no trace id)",
            title_justify="left",
        )
        table.add_column("time (UTC)", no_wrap=True)
        table.add_column("since first", justify="right", no_wrap=True)
        if several_files:
            table.add_column("log", no_wrap=True)
        table.add_column("role", no_wrap=True)
        table.add_column("hop", no_wrap=True)
        table.add_column("details")
        for path, record in records:
            when = _when(record)
            since = f"+{(when - first).total_seconds():.3f} s" if when and first else ""
            role = str(record.get("logger", "")).removeprefix("mailfleet.")
            shown = [
                when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if when else "?",
                since,
                *([path.stem] if several_files else []),
                role,
                str(record.get("event", "")),
                _detail(record),
            ]
            table.add_row(*shown)
        console.print(table)
    return 0
