"""``mailfleet`` entry point: global options, then one sub-command group per
module (serve, domain, user, account, queue, quarantine, index, db, blobs,
status, trace, import/export)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from mailfleet.cli import (
    account,
    blobs,
    db,
    domain,
    index,
    quarantine,
    queue,
    serve,
    status,
    trace,
    transfer,
    user,
)
from mailfleet.config import ConfigError, Settings, load_settings
from mailfleet.errors import MailfleetError
from mailfleet.loop import run
from mailfleet.storage.errors import SchemaOutOfDate, StorageError

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="where the embedded stores live (default ./mailfleet-data, or MAILFLEET_DATA_DIR)",
    )
    parser.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="TOML configuration file"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailfleet", description="mailfleet email service")
    _common(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        serve,
        domain,
        user,
        account,
        queue,
        quarantine,
        index,
        db,
        blobs,
        status,
        trace,
        transfer,
    ):
        module.register(commands, _common)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if "data_dir" in args:
        overrides["data_dir"] = str(args.data_dir)
    if getattr(args, "overrides", None):
        overrides.update(args.overrides(args))
    config = getattr(args, "config", None)
    if config is None and os.environ.get("MAILFLEET_CONFIG"):
        config = Path(os.environ["MAILFLEET_CONFIG"])
    return load_settings(config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        handler: Handler = args.handler
        return run(handler(args, settings))
    except ConfigError as exc:
        print(f"mailfleet: {exc}", file=sys.stderr)
        return 2
    except MailfleetError as exc:
        print(f"mailfleet: {exc.message}", file=sys.stderr)
        return 1
    except SchemaOutOfDate as exc:  # a role refuses to start: say why and what to run
        print(f"mailfleet: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"mailfleet: storage error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
