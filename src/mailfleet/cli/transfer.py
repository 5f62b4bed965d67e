"""``mailfleet import ACCOUNT FILE|DIR`` and ``mailfleet export ACCOUNT DIR``:
an account's mail in from mbox files and Maildirs, and out as mbox files
(``mailfleet.transfer``, decision 0027). Both show progress and stop cleanly
on Ctrl-C or SIGTERM; running the same command again resumes (an import
adds only what is missing, an export rewrites whole files)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailfleet.cli.progress import interrupted, progress_bar, stop_on_sigterm
from mailfleet.config import Settings
from mailfleet.errors import Invalid, NotFound
from mailfleet.proto.addresses import mailbox_key
from mailfleet.runtime import Runtime
from mailfleet.storage.interfaces import Account
from mailfleet.transfer.service import (
    DEFAULT_BATCH,
    ExportService,
    ImportReport,
    ImportService,
    ParseProcess,
)
from mailfleet.transfer.sources import find_folders

# From this many mails an import parses in a process of its own
# (transfer.service.ParseProcess): below it, starting that process costs more
# than it saves.
PARSE_PROCESS_FROM = 1000


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    imports = commands.add_parser(
        "import",
        help="import an mbox file or a Maildir (or a directory of them) into an account",
        description="Imports mail with its dates, read and flagged state and folders; "
        "running it again adds nothing twice (resume after an interruption by re-running).",
    )
    imports.add_argument("account", metavar="ACCOUNT", help="the account's address")
    imports.add_argument(
        "sources", metavar="FILE|DIR", type=Path, nargs="+", help="mbox files, Maildirs"
    )
    imports.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"mails stored per transaction (default {DEFAULT_BATCH})",
    )
    imports.set_defaults(handler=_import)
    common(imports)
    exports = commands.add_parser(
        "export",
        help="export an account's folders as mbox files into a directory",
        description="Writes one mbox file per folder (flags as Status/X-Status); each file "
        "is written whole or not at all, so re-running after an interruption completes it.",
    )
    exports.add_argument("account", metavar="ACCOUNT", help="the account's address")
    exports.add_argument("directory", metavar="DIR", type=Path)
    exports.set_defaults(handler=_export)
    common(exports)


async def _account(runtime: Runtime, email: str) -> Account:
    account = await runtime.stores.directory.get_account_by_email(mailbox_key(email))
    if account is None:
        raise NotFound(f"no account {email}")
    return account


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch < 1:
        raise Invalid("--batch must be at least 1")
    try:
        folders = [f for source in args.sources for f in find_folders(source)]
    except FileNotFoundError as exc:
        raise NotFound(str(exc)) from None
    started = time.monotonic()
    report = ImportReport()
    total = sum(folder.count() for folder in folders)
    # Started before the stores open, so that its process starts meanwhile.
    big = total >= PARSE_PROCESS_FROM
    with ParseProcess() if big else contextlib.nullcontext() as parser:
        runtime = await Runtime.open(settings)
        try:
            with stop_on_sigterm():
                account = await _account(runtime, args.account)
                service = ImportService(
                    runtime.mailbox,
                    runtime.stores.mailbox,
                    runtime.stores.blobs,
                    settings.smtp.hostname,
                )
                with progress_bar("mails") as bar:
                    task = bar.add_task(f"import {args.account}", total=total)

                    def shown(done: ImportReport) -> None:
                        bar.update(task, completed=done.added + done.present + done.deleted)

                    mails = itertools.chain.from_iterable(folder.mails() for folder in folders)
                    await service.run(
                        account.id,
                        mails,
                        batch=args.batch,
                        report=report,
                        progress=shown,
                        parser=parser,
                    )
        except asyncio.CancelledError:
            return interrupted(
                f"import after {report.added} new mails",
                "run the same command again to import the rest (nothing is added twice)",
            )
        finally:
            await runtime.close()
    seconds = time.monotonic() - started
    rate = report.read / seconds if seconds > 0 else 0.0
    print(
        f"imported {report.added} new mails of {report.read} read"
        f" ({report.present} already there, {report.deleted} marked deleted skipped)"
        f" from {len(folders)} folders in {seconds:.1f} s ({rate:,.0f} mails/s)"
    )
    for name in report.folders_created:
        print(f"created folder {name}")
    return 0


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    directory: Path = args.directory
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    started = time.monotonic()
    written = 0
    runtime = await Runtime.open(settings)
    try:
        with stop_on_sigterm():
            account = await _account(runtime, args.account)
            service = ExportService(runtime.stores.mailbox, runtime.stores.blobs)
            folders = await service.folders(account.id)
            done = []
            with progress_bar("mails") as bar:
                task = bar.add_task(f"export {args.account}", total=sum(f.total for f in folders))
                for folder in folders:
                    bar.update(task, description=f"export {folder.name}")
                    done.append(
                        await service.export_folder(
                            folder, directory, lambda n: bar.advance(task, n)
                        )
                    )
                    written += done[-1].messages
    except asyncio.CancelledError:
        return interrupted(
            f"export after {written} mails",
            "the folders written so far are complete; run the same command again",
        )
    finally:
        await runtime.close()
    for exported in done:
        print(f"{exported.path.name}\t{exported.messages}\t{exported.name}")
    print(
        f"exported {written} mails in {len(done)} folders to {directory}"
        f" in {time.monotonic() - started:.1f} s"
    )
    return 0
