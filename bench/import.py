"""``mailfleet import`` throughput (issue 15): mails per second from an mbox
and from a Maildir into an account on the embedded default (or whatever
``--config`` names).

Writes N mails (default 20,000) with Python's ``mailbox`` module, never our
code: an mbox and a Maildir++ tree (Inbox, .Sent, .Work.Clients), a mix of
plain mails of 1-6 KB (one body in five non-ASCII), non-ASCII subjects, dates
over 20 years, read and
flagged states, and one mail in ten with a 20-60 KB attachment. Then imports
each into an account of its own exactly as the CLI does
(``transfer.sources.find_folders`` + ``ImportService.run``, batches of
``--batch``), and imports the mbox a second time (nothing is added: the
idempotent re-run, what resuming an interrupted import costs). Prints mails
per second for each against the target of the issue: 1,000 mails/s.

Run from the repository root::

    .venv/bin/python bench/import.py                    # 20,000 mails
    .venv/bin/python bench/import.py --mails 2000       # a quick check

The data goes to a new directory under /var/tmp, deleted at the end unless
``--keep``."""

from __future__ import annotations

import argparse
import email.utils
import itertools
import mailbox
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from mailfleet.config import load_settings
from mailfleet.loop import run
from mailfleet.runtime import Runtime
from mailfleet.transfer.service import DEFAULT_BATCH, ImportService, ParseProcess
from mailfleet.transfer.sources import find_folders

DOMAIN = "bench.example"
ASCII_WORDS = [
    *("mail", "import", "archive", "budget", "meeting", "report", "the", "and", "of"),
    *("quarterly", "review", "lunch", "project", "deadline", "invoice", "travel"),
    *("update", "notes", "please", "find", "attached", "thanks", "regards", "to"),
]
WORDS = [*ASCII_WORDS, "Grüße", "Köln", "東京", "été", "naïve", "résumé"]
TARGET = 1_000


def make_mail(i: int, rng: random.Random) -> EmailMessage:
    m = EmailMessage()
    m["From"] = f"Sender {i % 97} <sender{i % 97}@elsewhere.example>"
    m["To"] = f"bench@{DOMAIN}"
    m["Subject"] = " ".join(rng.choice(WORDS) for _ in range(5)) + f" #{i}"
    # One body in five in German, French or Japanese (search folds those
    # character by character), the rest plain ASCII text.
    words = WORDS if i % 5 == 0 else ASCII_WORDS
    when = datetime(2005, 1, 1, tzinfo=UTC).timestamp() + rng.random() * 20 * 365 * 86400
    m["Date"] = email.utils.format_datetime(datetime.fromtimestamp(int(when), UTC))
    m["Message-ID"] = f"<bench{i}@elsewhere.example>"
    body = "\n".join(
        " ".join(rng.choice(words) for _ in range(12)) for _ in range(rng.randint(10, 80))
    )
    m.set_content(body + "\n")
    if i % 10 == 0:
        data = rng.randbytes(rng.randint(20_000, 60_000))
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename="d.bin")
    return m


def write_sources(root: Path, count: int) -> tuple[Path, Path]:
    rng = random.Random(15)
    root.mkdir(parents=True)
    mbox_path = root / "Inbox.mbox"
    box = mailbox.mbox(mbox_path)
    box.lock()
    maildir = mailbox.Maildir(root / "Maildir")
    folders = [maildir, maildir.add_folder("Sent"), maildir.add_folder("Work.Clients")]
    for i in range(count):
        mail = make_mail(i, rng)
        flags = ("R" if i % 3 else "") + ("F" if i % 17 == 0 else "")
        entry = mailbox.mboxMessage(mail)
        entry.set_flags(flags + "O")
        box.add(entry)
        stored = mailbox.MaildirMessage(mail)
        if flags:
            stored.set_subdir("cur")
            stored.set_flags(flags.replace("R", "S"))
        folders[i % 3].add(stored)
    box.close()
    return mbox_path, root / "Maildir"


async def bench(data: Path, sources: tuple[Path, Path], count: int, batch: int) -> None:
    settings = load_settings(None, {"data_dir": str(data), "domains": [{"name": DOMAIN}]})
    runtime = await Runtime.open(settings)
    try:
        if await runtime.stores.directory.get_domain(DOMAIN) is None:
            await runtime.accounts.add_domain(DOMAIN)
        rows = []
        for label, source, local in (
            ("mbox", sources[0], "mbox"),
            ("Maildir", sources[1], "maildir"),
            ("mbox again", sources[0], "mbox"),
        ):
            email_ = f"{local}@{DOMAIN}"
            account = await runtime.stores.directory.get_account_by_email(email_)
            if account is None:
                account = await runtime.accounts.add_user(email_, "bench password", local)
            service = ImportService(
                runtime.mailbox,
                runtime.stores.mailbox,
                runtime.stores.blobs,
                "bench",
            )
            folders = find_folders(source)
            started = time.perf_counter()
            with ParseProcess() as parser:  # as `mailfleet import` does from 1,000 mails
                report = await service.run(
                    account.id,
                    itertools.chain.from_iterable(f.mails() for f in folders),
                    batch=batch,
                    parser=parser,
                )
            seconds = time.perf_counter() - started
            rows.append((label, report.read, report.added, seconds))
    finally:
        await runtime.close()
    print(f"{'source':<12} {'mails':>7} {'added':>7} {'seconds':>8} {'mails/s':>8}  target")
    for label, read, added, seconds in rows:
        rate = read / seconds
        verdict = "ok" if rate >= TARGET else "BELOW"
        print(f"{label:<12} {read:>7} {added:>7} {seconds:>8.1f} {rate:>8,.0f}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mf-import-", dir="/var/tmp"))
    try:
        started = time.perf_counter()
        sources = write_sources(root / "sources", args.mails)
        size = sum(f.stat().st_size for f in (root / "sources").rglob("*") if f.is_file())
        print(
            f"wrote {args.mails} mails as mbox and as Maildir ({size / 2**20:.0f} MiB)"
            f" in {time.perf_counter() - started:.1f} s; {os.cpu_count()} cores"
        )
        run(bench(root / "data", sources, args.mails, args.batch))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
