"""``mailfleet quarantine list|show|release|delete`` as an operator runs it,
on mail the running service quarantined: release delivers to every
recipient's Inbox exactly once, delete drops the blob reference, each
refuses what was already decided; worker-in holds a mail once however
often it sees it."""

from __future__ import annotations

import asyncio
import json
import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailfleet.storage.interfaces import QuarantinedMail, QueueItem
from tests.conftest import Service, StartService, User
from tests.support.clamd import EICAR, EICAR_NAME, Clamd
from tests.test_restart import run_cli


@pytest.fixture
async def service(start_service: StartService, clamd: Clamd) -> Service:
    return await start_service({"filters": {"clamd": clamd.unix_url}})


def infected(subject: str, *to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "eve@outside.example"
    mail["To"] = ", ".join(to)
    mail["Subject"] = subject
    mail.set_content("Open the attachment.\n")
    mail.add_attachment(
        EICAR, maintype="application", subtype="octet-stream", filename="invoice.txt"
    )
    return mail


def send_mx(service: Service, mail: EmailMessage, to: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.send_message(mail, from_addr="eve@outside.example", to_addrs=to)


async def held(service: Service, count: int) -> list[QuarantinedMail]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        entries: list[QuarantinedMail] = await service.runtime.stores.directory.list_quarantined()
        if len(entries) >= count or asyncio.get_running_loop().time() > deadline:
            return entries
        await asyncio.sleep(0.05)


async def cli(data: Path, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, data, "quarantine", *args)
    return done.returncode, done.stdout, done.stderr


async def test_release_delivers_once_to_every_recipient_and_delete_drops_the_mail(
    service: Service, alice: User, bob: User, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    await asyncio.to_thread(
        send_mx, service, infected("to both", alice.email, bob.email), [alice.email, bob.email]
    )
    await asyncio.to_thread(send_mx, service, infected("to bob", bob.email), [bob.email])
    entries = await held(service, 2)
    by_subject = {e.subject: e for e in entries}
    both, only_bob = by_subject["to both"], by_subject["to bob"]

    code, out, err = await cli(data, "list")
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(e.id) for e in entries]
    code, out, err = await cli(data, "show", str(both.id))
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "held"
    assert shown["recipients"] == [alice.email, bob.email]
    assert (shown["mail_from"], shown["client_ip"]) == ("eve@outside.example", "127.0.0.1")
    assert {"name": "VIRUS", "score": 0.0, "detail": EICAR_NAME} in shown["reasons"]
    code, out, err = await cli(data, "show", str(both.id), "--raw")
    assert code == 0, err
    assert "Subject: to both" in out and out.startswith("Return-Path: <eve@outside.example>")

    code, out, err = await cli(data, "release", str(both.id))
    assert (code, out.strip()) == (0, f"released {both.id} to {alice.email}, {bob.email}"), err
    (for_alice,) = await alice.wait_for("inbox", 1)
    (for_bob,) = await bob.wait_for("inbox", 1)
    assert for_alice["subject"] == for_bob["subject"] == "to both"
    detail = (await bob.client.get(f"/v1/messages/{for_bob['id']}")).json()
    assert [a["filename"] for a in detail["attachments"]] == ["invoice.txt"]
    assert detail["spam"]["verdict"] == "quarantine"  # why it was held, for the reader

    # Once: the CLI refuses a second release, and a release cut short and
    # run again (the service's own step) stores no second copy.
    code, _, err = await cli(data, "release", str(both.id))
    assert code == 1 and f"quarantined mail {both.id} was already released" in err
    assert await service.runtime.incoming.release(both) == [alice.email, bob.email]
    assert len(await bob.messages("inbox")) == len(await alice.messages("inbox")) == 1

    assert await service.runtime.stores.directory.quarantine_blob_references(
        [only_bob.raw_hash]
    ) == {only_bob.raw_hash}
    code, out, err = await cli(data, "delete", str(only_bob.id))
    assert (code, out.strip()) == (0, f"deleted {only_bob.id}"), err
    assert (
        await service.runtime.stores.directory.quarantine_blob_references([only_bob.raw_hash])
        == set()
    )
    code, _, err = await cli(data, "release", str(only_bob.id))
    assert code == 1 and "was already deleted" in err
    code, _, err = await cli(data, "delete", str(only_bob.id))
    assert code == 1 and "was already deleted" in err
    assert len(await bob.messages("inbox")) == 1

    code, out, _ = await cli(data, "list")
    assert (code, out) == (0, "")
    code, out, _ = await cli(data, "list", "--status", "all", "--json")
    statuses = {
        json.loads(line)["subject"]: json.loads(line)["status"] for line in out.splitlines()
    }
    assert statuses == {"to both": "released", "to bob": "deleted"}
    code, out, _ = await cli(data, "list", "--status", "all", "--before", str(both.id))
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        str(e.id) for e in entries if e.id < both.id
    ]


async def test_unknown_ids_are_clear_errors(service: Service, tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, _, err = await cli(data, "show", "12345")
    assert code == 1 and "no quarantined mail 12345" in err
    code, _, err = await cli(data, "release", "not-an-id")
    assert code == 1 and "not a quarantine id: 'not-an-id'" in err


async def test_worker_in_holds_a_mail_once_however_often_it_sees_it(
    service: Service, bob: User
) -> None:
    await asyncio.to_thread(send_mx, service, infected("once", bob.email), [bob.email])
    (entry,) = await held(service, 1)
    blob = await service.runtime.stores.blobs.get(entry.raw_hash)
    assert b"Subject: once" in blob
    # The same queue item again, as a redelivery after a lost ack would bring it.
    again = QueueItem(
        queue="incoming",
        id="redelivered",
        payload={
            "queue_id": entry.ingest_key.removeprefix("in:"),
            "raw_hash": entry.raw_hash,
            "raw_size": entry.raw_size,
            "mail_from": entry.mail_from,
            "recipients": list(entry.recipients),
            "received_at": entry.received_at,
            "client_ip": entry.client_ip,
            "helo": entry.helo,
        },
        attempts=2,
        enqueued_at=entry.received_at,
        not_before=0,
    )
    assert await service.runtime.incoming.process(again) == 0
    assert await service.runtime.stores.directory.list_quarantined(status=None) == [entry]
    assert await bob.messages("inbox") == []
