"""Issue 14, resource faults: the blob store on a small file system (a tmpfs
of a few MiB) that fills up while mail arrives over SMTP and users send and
upload over the API.

While it is full: the MX and submission answer 452 4.3.1 (the client keeps
the mail and tries later), the API 507 ``insufficient_storage``; nothing is
half written (no temporary file left behind, no mail stored without its
body). When space returns, everything works again by itself: mail answered
250 before the disk filled, whose parts worker-in could not store yet, is
delivered whole, once; mail answered 452 is not delivered at all (its
sender sends it again)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import StartService, User
from tests.support.tools import missing, require_program

FILESYSTEM_BYTES = 4 * 1024 * 1024
# Left free when the disk is filled: a few mails' worth, so that it fills
# in the middle of the run rather than before it.
HEADROOM = 400 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of FILESYSTEM_BYTES mounted for this test (root only)."""
    mount = require_program("mount", "apt-get install mount")
    if os.geteuid() != 0:
        missing("mounting a small tmpfs needs root: run the tests as root")
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run([mount, "-t", "tmpfs", "-o", f"size={FILESYSTEM_BYTES}", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        # Lazy: a server still closing must not keep the mount behind.
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path, leave: int) -> Path:
    """A file taking all the space of ``path``'s file system but ``leave``."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    filler = path / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _mail(to: str, n: int) -> EmailMessage:
    """Every other mail past the blob pack's limit: both ways of writing a
    blob (the shared SQLite pack, a file of its own) meet the full disk."""
    mail = EmailMessage()
    mail["From"] = "sender@remote.test"
    mail["To"] = to
    mail["Subject"] = f"disk mail {n}"
    mail["Message-ID"] = f"<disk-{n}@remote.test>"
    size = 150_000 if n % 2 else 20_000
    line = f"mail {n} line of its body, whole or not at all\n"
    mail.set_content(line * (size // len(line)))
    return mail


async def _smtp_send(port: int, mail: EmailMessage) -> str:
    """The reply to the mail's DATA (or the first refusal) as "CODE text"."""
    try:
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"
    return "250"


def _files_in_tmp(blobs: Path) -> list[str]:
    tmp = blobs / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


async def _leftovers(blobs: Path, patience: float = 5) -> list[str]:
    """Temporary files that stay: worker-in may be writing one at any
    instant (it retries the mails it could not store while the disk is
    full), and a write that failed removes its own. What is still there
    after ``patience`` seconds of looking, without one empty look, stays."""
    deadline = time.monotonic() + patience
    while found := _files_in_tmp(blobs):
        if time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)
    return []


async def test_a_full_blob_disk_answers_452_and_507_loses_nothing_and_recovers(
    start_service: StartService, small_fs: Path
) -> None:
    blobs = small_fs / "blobs"
    service = await start_service({"storage": {"blob_url": f"file://{blobs}"}})
    anonymous = service.client()
    users: list[User] = [await service.user(name) for name in ("alice", "bob")]
    alice, bob = users
    assert (await anonymous.get("/healthz")).status_code == 200
    filler = _fill(small_fs, HEADROOM)

    accepted: list[int] = []
    refused: dict[int, str] = {}
    n = 0
    while len(refused) < 3:
        assert n < 60, f"the disk never filled: {len(accepted)} mails accepted"
        reply = await _smtp_send(service.smtp_port, _mail(bob.email, n))
        if reply == "250":
            accepted.append(n)
        else:
            refused[n] = reply
        n += 1
    assert accepted, "the disk was full before the first mail"
    print(f"disk full after {len(accepted)} mails answered 250; then {sorted(refused.values())}")
    for reply in refused.values():
        assert reply.startswith("452 4.3.1"), refused

    # The API says so too, and keeps nothing it could not finish.
    upload = await alice.client.post(
        "/v1/attachments", files={"file": ("plan.pdf", os.urandom(300_000), "application/pdf")}
    )
    assert upload.status_code == 507, upload.text
    assert upload.json()["error"]["code"] == "insufficient_storage"
    assert int(upload.headers["Retry-After"]) > 0
    sent = await alice.client.post(
        "/v1/messages", json={"to": [bob.email], "subject": "while full", "body": "x" * 300_000}
    )
    assert sent.status_code == 507, sent.text
    assert await _leftovers(blobs) == []
    # Reading goes on: the inbox lists what was stored.
    assert (await bob.client.get("/v1/folders")).status_code == 200

    # Space returns: everything works again, nothing restarted.
    filler.unlink()
    freed = time.monotonic()
    after = len(accepted) + len(refused)
    assert await _smtp_send(service.smtp_port, _mail(bob.email, after)) == "250"
    accepted.append(after)
    await alice.upload("plan.pdf", os.urandom(300_000), "application/pdf")
    await alice.send(to=[bob.email], subject="after the disk was freed", body="hello again")

    # Every mail answered 250 is in Bob's inbox once, whole; none answered 452.
    want = {f"disk mail {i}" for i in accepted} | {"after the disk was freed"}
    await bob.wait_for("inbox", len(want), timeout=60)
    queue = service.runtime.stores.queue
    for _ in range(100):  # drained: no copy can come later
        if (await queue.stats("incoming")).depth == 0:
            break
        await asyncio.sleep(0.1)
    assert (await queue.stats("incoming")).depth == 0
    assert (await queue.stats("error")).depth == 0
    listed = await bob.messages("inbox", limit=200)
    subjects = [m["subject"] for m in listed]
    assert sorted(subjects) == sorted(want)
    for summary in listed:
        if not summary["subject"].startswith("disk mail"):
            continue
        n = int(summary["subject"].rsplit(" ", 1)[1])
        message = (await bob.client.get(f"/v1/messages/{summary['id']}")).json()
        assert message["body_unavailable"] is False
        assert message["body"].count(f"mail {n} line of its body") == len(
            _mail(bob.email, n).get_content().splitlines()
        )
    assert await _leftovers(blobs) == []
    print(f"recovered: delivered {len(want)} mails, each once, {time.monotonic() - freed:.2f} s")
