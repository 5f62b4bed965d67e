"""``mailfleet import`` and ``mailfleet export`` as a user moving in and out
runs them: mbox files and Maildirs written by Python's ``mailbox`` module and
by mutt (never by our code), imported by the CLI into a running service's
account and checked through the HTTP API; exported and imported into another
account; interrupted and resumed (issue 15 point 5, decision 0027)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import io
import itertools
import mailbox
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailfleet.cli.main import main
from mailfleet.transfer.service import ImportService, ParseProcess
from mailfleet.transfer.sources import find_folders
from tests.conftest import Service, User
from tests.support.profile import Profile
from tests.support.tools import require_program
from tests.test_restart import MAILFLEET, _config, run_cli

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


@dataclass(frozen=True)
class Mail:
    """One mail of the test mailboxes and what the API must show of it."""

    mid: str  # Message-ID without brackets
    subject: str
    when: datetime  # the received time the import must keep
    folder: str  # the folder name the API shows
    read: bool = False
    flagged: bool = False
    date_header: bool = True  # without: the From_ line or the file's mtime is the date
    attachment: bool = False

    def message(self) -> EmailMessage:
        m = EmailMessage()
        m["From"] = "Zoë Sender <zoe@elsewhere.example>"
        m["To"] = "alice@example.com"
        m["Subject"] = self.subject
        if self.date_header:
            m["Date"] = email.utils.format_datetime(self.when)
        m["Message-ID"] = f"<{self.mid}>"
        m.set_content(f"Body of {self.subject}\n\nFrom the start of a line, quoted in mbox.\n")
        if self.attachment:
            m.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
        return m


def at(year: int, month: int = 6, day: int = 15, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, 30, 5, tzinfo=UTC)


# Maildir++ (as Dovecot writes it): root = Inbox, .Folder.Sub directories,
# one folder name in IMAP's modified UTF-7.
MAILDIR = [
    Mail("m1@example.net", "Old friend", at(2009, 1, 2), "Inbox", read=True),
    Mail("m2@example.net", "Grüße aus Köln — 東京", at(2024, 2, 29), "Inbox", flagged=True),
    Mail("m3@example.net", "Sent long ago", at(2015), "Sent", read=True),
    Mail(
        "m4@example.net",
        "Quarterly report",
        at(2019, 3, 1),
        "Work/Clients",
        read=True,
        flagged=True,
        attachment=True,
    ),
    Mail("m5@example.net", "Vacances d'été", at(2021, 8, 1), "Projets été"),
    Mail("m6@example.net", "Thrown away", at(2017), "Trash", read=True),
    Mail("m7@example.net", "No date header", at(2012, 5, 5), "Inbox", date_header=False),
]
MAILDIR_DIRS = {
    "Inbox": None,
    "Sent": ".Sent",
    "Work/Clients": ".Work.Clients",
    "Projets été": ".Projets &AOk-t&AOk-",
    "Trash": ".Trash",
}

# Thunderbird's layout: mbox files without extension, .msf indexes beside
# them, sub-folders in Name.sbd directories, X-Mozilla-Status flags.
THUNDERBIRD = [
    (Mail("t1@example.net", "Read in Thunderbird", at(2010), "Inbox", read=True), "0001"),
    (
        Mail("t2@example.net", "Read and starred", at(2016), "Inbox", read=True, flagged=True),
        "0005",
    ),
    (Mail("t3@example.net", "Unread still", at(2023), "Inbox"), "0000"),
]
EXPUNGED = Mail("t4@example.net", "Expunged, awaiting compaction", at(2011), "Inbox")
# Status/X-Status, as mutt and Python's mboxMessage keep them.
MBOX_STATUS = [
    Mail("s1@example.net", "Mbox sent, flagged", at(2013), "Sent", read=True, flagged=True),
    Mail("s2@example.net", "Python list", at(2008, 7, 7), "Lists/Python", date_header=False),
]
# Gmail Takeout: one file, the folder and flags in X-Gmail-Labels.
TAKEOUT = [
    (Mail("g1@example.net", "Starred in Gmail", at(2020), "Inbox", True, True), "Inbox,Starred"),
    (Mail("g2@example.net", "A receipt", at(2022), "Receipts"), "Unread,Receipts,Category Updates"),
    (Mail("g3@example.net", "Buy now", at(2018), "Junk"), "Spam,Unread"),
    (Mail("g4@example.net", "Archived thread", at(2014), "Archive", read=True), "Opened"),
]
EXPECTED = [*MAILDIR, *(m for m, _ in THUNDERBIRD), *MBOX_STATUS, *(m for m, _ in TAKEOUT)]


def write_maildir(root: Path) -> None:
    top = mailbox.Maildir(root)
    boxes = {name: top if d is None else top.add_folder(d[1:]) for name, d in MAILDIR_DIRS.items()}
    for mail in MAILDIR:
        message = mailbox.MaildirMessage(mail.message())
        message.set_date(mail.when.timestamp())  # the file's mtime
        if mail.read or mail.flagged:
            message.set_subdir("cur")
            message.set_flags(("S" if mail.read else "") + ("F" if mail.flagged else ""))
        boxes[mail.folder].add(message)
    top.close()


def write_thunderbird(root: Path) -> None:
    root.mkdir()
    inbox = mailbox.mbox(root / "Inbox")
    for mail, status in THUNDERBIRD:
        message = mailbox.mboxMessage(mail.message())
        message["X-Mozilla-Status"] = status
        message["X-Mozilla-Status2"] = "00000000"
        inbox.add(message)
    expunged = mailbox.mboxMessage(EXPUNGED.message())
    expunged["X-Mozilla-Status"] = "0009"
    inbox.add(expunged)
    inbox.close()
    (root / "Inbox.msf").write_text("// <!-- <mdb:mork:z v=1.4/> -->\n")
    sent = mailbox.mbox(root / "Sent")
    (root / "Lists.sbd").mkdir()
    lists = mailbox.mbox(root / "Lists.sbd" / "Python")
    for mail in MBOX_STATUS:
        message = mailbox.mboxMessage(mail.message())
        message.set_from("MAILER-DAEMON", mail.when.timetuple())
        message.set_flags(("RO" if mail.read else "O") + ("F" if mail.flagged else ""))
        (sent if mail.folder == "Sent" else lists).add(message)
    sent.close()
    lists.close()


def write_takeout(path: Path) -> None:
    box = mailbox.mbox(path)
    for mail, labels in TAKEOUT:
        message = mailbox.mboxMessage(mail.message())
        message["X-GM-THRID"] = "1234567890"
        message["X-Gmail-Labels"] = labels
        box.add(message)
    box.close()


def write_sources(root: Path) -> list[str]:
    root.mkdir()
    write_maildir(root / "Maildir")
    write_thunderbird(root / "Thunderbird")
    write_takeout(root / "All mail Including Spam and Trash.mbox")
    return [
        str(root / "Maildir"),
        str(root / "Thunderbird"),
        str(root / "All mail Including Spam and Trash.mbox"),
    ]


async def snapshot(user: User) -> dict[str, dict[str, Any]]:
    """Every message of the account through the API, by Message-ID."""
    folders = (await user.client.get("/v1/folders")).json()
    found: dict[str, dict[str, Any]] = {}
    count = 0
    for folder in folders:
        cursor = None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = (
                await user.client.get(f"/v1/folders/{folder['id']}/messages", params=params)
            ).json()
            for item in page["items"]:
                count += 1
                full = (await user.client.get(f"/v1/messages/{item['id']}")).json()
                attachments = []
                for a in full["attachments"]:
                    data = await user.client.get(f"/v1/messages/{item['id']}/attachments/{a['id']}")
                    attachments.append((a["filename"], hashlib.sha256(data.content).hexdigest()))
                found[full["message_id_header"]] = {
                    "subject": full["subject"],
                    "received_at": datetime.fromisoformat(full["received_at"]),
                    "is_read": full["is_read"],
                    "is_flagged": full["is_flagged"],
                    "folder": folder["name"],
                    # mbox cannot say that a mail's last line had no line
                    # end (decision 0027): one is added on the way out.
                    "body": hashlib.sha256(full["body"].rstrip("\n").encode()).hexdigest(),
                    "attachments": sorted(attachments),
                }
            cursor = page["next_cursor"]
            if not cursor:
                break
    assert count == len(found), "a message is there twice"
    return found


def import_cli(data: Path, account: str, *sources: str) -> subprocess.CompletedProcess[str]:
    """``mailfleet import`` in a process of its own, as an operator runs it."""
    done = run_cli(data, "import", account, *sources)
    assert done.returncode == 0, done.stderr
    return done


async def cli(data: Path, *args: str) -> str:
    """The CLI's ``main`` in this process (no interpreter start-up: the
    tests stay fast), on a thread of its own; answers its standard output."""
    argv = ["--data-dir", str(data), *_config(data, args), *args]
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(argv)

    status = await asyncio.to_thread(call)
    assert status == 0, err.getvalue()
    return out.getvalue()


async def test_import_keeps_every_message_date_flag_and_folder_and_adds_nothing_twice(
    tmp_path: Path, service: Service, alice: User
) -> None:
    sources = write_sources(tmp_path / "sources")
    data = tmp_path / "data"
    first = await asyncio.to_thread(import_cli, data, alice.email, *sources)
    assert f"imported {len(EXPECTED)} new mails" in first.stdout
    assert "1 marked deleted skipped" in first.stdout
    assert "created folder Projets été" in first.stdout.splitlines()

    got = await snapshot(alice)
    assert sorted(got) == sorted(f"<{m.mid}>" for m in EXPECTED)
    for mail in EXPECTED:
        shown = got[f"<{mail.mid}>"]
        assert shown["subject"] == mail.subject, mail
        assert shown["received_at"] == mail.when, mail
        assert (shown["is_read"], shown["is_flagged"]) == (mail.read, mail.flagged), mail
        assert shown["folder"] == mail.folder, mail
        assert shown["attachments"] == (
            [("report.pdf", hashlib.sha256(PDF).hexdigest())] if mail.attachment else []
        )
    # Searchable and threaded like delivered mail.
    found = (await alice.client.get("/v1/search", params={"q": "Köln"})).json()["items"]
    assert [m["subject"] for m in found] == ["Grüße aus Köln — 東京"]

    again = await cli(data, "import", alice.email, *sources)
    assert "imported 0 new mails" in again
    # Everything imported is indexed already: a resumed rebuild adds nothing.
    rebuilt = await cli(data, "index", "rebuild", "--resume")
    assert rebuilt.startswith("indexed 0 messages of every account")
    assert await snapshot(alice) == got


async def test_export_then_import_into_a_new_account_gives_the_same_mail(
    tmp_path: Path, service: Service, alice: User, bob: User
) -> None:
    data = tmp_path / "data"
    await cli(data, "import", alice.email, *write_sources(tmp_path / "sources"))
    # Mail that arrived the usual way goes out and back in too.
    await bob.send(to=[alice.email], subject="Delivered, not imported", body="hello")
    await alice.wait_for("inbox", 1 + sum(1 for m in EXPECTED if m.folder == "Inbox"))
    before = await snapshot(alice)

    out = tmp_path / "export"
    await cli(data, "export", alice.email, str(out))
    names = sorted(p.name for p in out.iterdir())
    assert "Work%2FClients.mbox" in names
    assert "Projets été.mbox" in names
    assert not [n for n in names if n.endswith(".partial")]

    carol = await service.user("carol")
    back = await cli(data, "import", carol.email, str(out))
    assert f"imported {len(before)} new mails" in back
    after = await snapshot(carol)
    assert sorted(after) == sorted(before)
    for mid, shown in before.items():
        assert after[mid] == shown, mid


async def test_parsing_in_a_second_process_stores_the_same_mail(
    tmp_path: Path, service: Service, alice: User, bob: User
) -> None:
    # `mailfleet import` parses big imports in a process of its own
    # (transfer.service.ParseProcess): what it stores must not change.
    sources = write_sources(tmp_path / "sources")
    runtime = service.runtime

    async def imported(user: User, parser: ParseProcess | None) -> None:
        service_ = ImportService(
            runtime.mailbox, runtime.stores.mailbox, runtime.stores.blobs, "test"
        )
        folders = [f for source in sources for f in find_folders(Path(source))]
        mails = itertools.chain.from_iterable(f.mails() for f in folders)
        report = await service_.run(int(user.id), mails, batch=3, parser=parser)
        assert report.added > 10

    with ParseProcess() as parser:
        await imported(alice, parser)
    await imported(bob, None)
    assert await snapshot(alice) == await snapshot(bob)


def big_mbox(path: Path, count: int) -> None:
    box = mailbox.mbox(path)
    box.lock()
    for i in range(count):
        date = email.utils.format_datetime(at(2000 + i % 25))
        box.add(
            f"From: a@example.net\nSubject: Bulk {i}\nDate: {date}\n"
            f"Message-ID: <bulk{i}@example.net>\n\nMail number {i}.\n".encode()
        )
    box.close()


def _import_process(data: Path, account: str, source: Path) -> subprocess.Popen[str]:
    args = ("import", account, str(source), "--batch", "10")
    return subprocess.Popen(
        [*MAILFLEET, "--data-dir", str(data), *_config(data, args), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _stop_when_stored(
    user: User, process: subprocess.Popen[str], more_than: int, sig: int
) -> int:
    """Sends ``sig`` once the Inbox holds more than ``more_than`` mails;
    answers how many it held then."""
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None, "the import ended before it could be interrupted"
            total = (await user.folder("inbox"))["total"]
            if total > more_than:
                process.send_signal(sig)
                return int(total)
            assert time.monotonic() < deadline, "the import stored nothing"
            await asyncio.sleep(0.005)
    except BaseException:
        process.kill()
        await asyncio.to_thread(process.communicate, timeout=60)
        raise


async def test_interrupted_import_resumes_without_duplicates(
    tmp_path: Path, service: Service, alice: User, profile: Profile
) -> None:
    # Enough that each run is stopped mid-way (10 mails per transaction).
    count = 600 if profile.distributed else 2000
    source = tmp_path / "Inbox.mbox"
    await asyncio.to_thread(big_mbox, source, count)
    data = tmp_path / "data"

    # Ctrl-C or SIGTERM: it stops between batches, says how to go on.
    stopped = _import_process(data, alice.email, source)
    await _stop_when_stored(alice, stopped, 0, signal.SIGTERM)
    _, err = await asyncio.to_thread(stopped.communicate, timeout=60)
    assert stopped.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err

    # SIGKILL: no chance to clean up at all.
    killed = _import_process(data, alice.email, source)
    held = (await alice.folder("inbox"))["total"]
    at_kill = await _stop_when_stored(alice, killed, held, signal.SIGKILL)
    await asyncio.to_thread(killed.communicate, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert at_kill < count

    resumed = await cli(data, "import", alice.email, str(source))
    assert f"of {count} read" in resumed
    inbox = await alice.folder("inbox")
    assert inbox["total"] == count
    subjects = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await alice.client.get(f"/v1/folders/{inbox['id']}/messages", params=params)).json()
        subjects.update(m["subject"] for m in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert subjects == {f"Bulk {i}" for i in range(count)}


def _mutt(home: Path, record: str, mbox_type: str, subject: str, *attach: str) -> None:
    mutt = require_program("mutt", "apt-get install -y mutt")
    settings = (
        f"set record={record}; set mbox_type={mbox_type}; set sendmail=/bin/true;"
        ' set from="Carol Mutt <carol@elsewhere.example>"; set copy=yes;'
        " set charset=utf-8; set send_charset=utf-8"
    )
    subprocess.run(
        [mutt, "-n", "-F", "/dev/null", "-e", settings, "-s", subject, *attach, "bob@example.net"],
        input="Written by mutt.\nFrom the start of a line.\n",
        text=True,
        env={**os.environ, "HOME": str(home)},
        check=True,
        timeout=30,
        capture_output=True,
    )


async def test_mail_written_by_mutt_imports(tmp_path: Path, service: Service, alice: User) -> None:
    """mutt as a second writer: its Fcc copies of sent mail, an mbox and a
    Maildir (with an attachment), marked read as mutt marks them."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "report.pdf").write_bytes(PDF)
    await asyncio.to_thread(_mutt, home, str(tmp_path / "Sent"), "mbox", "Über mutt")
    attach = ("-a", str(home / "report.pdf"), "--")
    await asyncio.to_thread(
        _mutt, home, str(tmp_path / "Archive"), "Maildir", "Mutt attachment", *attach
    )
    data = tmp_path / "data"
    await cli(data, "import", alice.email, str(tmp_path / "Sent"), str(tmp_path / "Archive"))
    got = {m["subject"]: m for m in (await snapshot(alice)).values()}
    assert got["Über mutt"]["folder"] == "Sent"
    assert got["Mutt attachment"]["folder"] == "Archive"
    assert got["Über mutt"]["is_read"] and got["Mutt attachment"]["is_read"]
    assert got["Mutt attachment"]["attachments"] == [
        ("report.pdf", hashlib.sha256(PDF).hexdigest())
    ]
