"""Viruses and blocked attachments over SMTP (issue 13 point 5), against the
tests' own clamd (tests/support/clamd.py): inbound mail carrying EICAR (as
an attachment, in a zip, base64 in a forwarded message) or a program
disguised as a PDF is quarantined and in no folder (the API's listings and
``mailfleet quarantine list`` say so); clean mail passes; a user submitting
EICAR is refused with 554 5.7.1; clamd stopped, mail waits and then flows."""

from __future__ import annotations

import asyncio
import os
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from mailfleet.filters.rules import GTUBE
from mailfleet.storage.interfaces import QuarantinedMail
from tests.conftest import Service, StartService, User
from tests.smtp.test_submission import logged_in, outgoing
from tests.support.clamd import EICAR, EICAR_NAME, Clamd, zipped
from tests.test_restart import run_cli

PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\0" * 64 + b"PE\0\0"
PDF = b"%PDF-1.7\n" + os.urandom(20_000) + b"\n%%EOF\n"


@pytest.fixture
async def service(start_service: StartService, clamd: Clamd) -> Service:
    return await start_service(
        {"filters": {"clamd": clamd.unix_url}, "smtp": {"insecure_auth_on_loopback": True}}
    )


def message(
    subject: str, *attachments: tuple[str, bytes, str], to: str = "bob@example.com"
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Sam Sender <sam@outside.example>"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain="outside.example")
    mail.set_content("Please find the file attached.\n")
    for filename, data, content_type in attachments:
        maintype, _, subtype = content_type.partition("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mail


def forwarded(inner: EmailMessage) -> EmailMessage:
    outer = message("Fwd: " + str(inner["Subject"]))
    outer.add_attachment(inner)  # message/rfc822, the EICAR inside base64
    return outer


def send_mx(service: Service, *mails: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        for mail in mails:
            client.send_message(mail, from_addr="sam@outside.example", to_addrs=[mail["To"]])


async def everything(user: User) -> list[tuple[str, str]]:
    """(folder role or name, subject) of every message in every folder."""
    found = []
    for folder in (await user.client.get("/v1/folders")).json():
        response = await user.client.get(f"/v1/folders/{folder['id']}/messages")
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            found.append((folder["role"] or folder["name"], item["subject"]))
    return found


async def quarantined(service: Service, count: int, timeout: float = 20) -> list[QuarantinedMail]:
    directory = service.runtime.stores.directory
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        entries: list[QuarantinedMail] = await directory.list_quarantined()
        if len(entries) >= count or asyncio.get_running_loop().time() > deadline:
            return entries
        await asyncio.sleep(0.05)


async def test_eicar_attached_zipped_or_forwarded_is_quarantined_and_clean_mail_passes(
    service: Service, bob: User, tmp_path: Path
) -> None:
    infected = [
        message("attached", ("eicar.com.txt", EICAR, "application/octet-stream")),
        message("zipped", ("report.zip", zipped("eicar.com", EICAR), "application/zip")),
        forwarded(message("forwarded", ("eicar.txt", EICAR, "application/octet-stream"))),
    ]
    for mail in infected:
        assert EICAR not in mail.as_bytes()  # encoded: clamd has to look inside
    clean = message("minutes", ("minutes.pdf", PDF, "application/pdf"))
    await asyncio.to_thread(send_mx, service, *infected, clean)

    (inbox,) = await bob.wait_for("inbox", 1)
    entries = await quarantined(service, 3)
    assert inbox["subject"] == "minutes"
    assert sorted(e.subject for e in entries) == ["Fwd: forwarded", "attached", "zipped"]
    for entry in entries:
        assert entry.recipients == ("bob@example.com",)
        assert (entry.mail_from, entry.client_ip) == ("sam@outside.example", "127.0.0.1")
        assert [(r.name, r.detail) for r in entry.reasons if r.name == "VIRUS"] == [
            ("VIRUS", EICAR_NAME)
        ]
    # Never in any folder: only the clean mail is anywhere.
    await asyncio.sleep(0.5)
    assert await everything(bob) == [("inbox", "minutes")]
    detail = (await bob.client.get(f"/v1/messages/{inbox['id']}")).json()
    assert detail["spam"]["verdict"] == "ham"
    assert [a["filename"] for a in detail["attachments"]] == ["minutes.pdf"]

    listing = await asyncio.to_thread(run_cli, tmp_path / "data", "quarantine", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "\theld\tsam@outside.example\tbob@example.com\t" in line
        assert f"VIRUS: {EICAR_NAME}" in line


async def test_a_virus_in_spam_is_held_not_put_in_junk(service: Service, bob: User) -> None:
    spam = message("spam")
    spam.set_content(f"{GTUBE.decode()}\n")  # scores as reject: Junk, were it not for the virus
    spam.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="a.com")
    await asyncio.to_thread(send_mx, service, spam, message("ham"))
    (inbox,) = await bob.wait_for("inbox", 1)
    (entry,) = await quarantined(service, 1)
    assert (inbox["subject"], entry.subject, entry.verdict) == ("ham", "spam", "reject")
    assert {r.name for r in entry.reasons} >= {"GTUBE", "VIRUS", "ATTACHMENT_BLOCKED"}
    await asyncio.sleep(0.3)
    assert await everything(bob) == [("inbox", "ham")]


async def test_a_program_renamed_pdf_is_caught_by_its_content(service: Service, bob: User) -> None:
    await asyncio.to_thread(
        send_mx,
        service,
        message("invoice", ("invoice.pdf", PE, "application/pdf")),
        message("scripts", ("run.js", b"WScript.Echo(1)", "application/javascript")),
        message("plain", ("notes.pdf", PDF, "application/pdf")),
    )
    entries = await quarantined(service, 2)
    (inbox,) = await bob.wait_for("inbox", 1)
    assert inbox["subject"] == "plain"
    reasons = {e.subject: [(r.name, r.detail) for r in e.reasons] for e in entries}
    assert reasons == {
        "invoice": [("ATTACHMENT_BLOCKED", "invoice.pdf: a Windows program (MZ header)")],
        "scripts": [("ATTACHMENT_BLOCKED", "run.js: files of type .js are not allowed")],
    }
    await asyncio.sleep(0.3)
    assert await everything(bob) == [("inbox", "plain")]


async def test_mail_waits_while_clamd_is_down_and_flows_when_it_is_back(
    service: Service, bob: User, clamd: Clamd
) -> None:
    clamd.stop()
    try:
        await asyncio.to_thread(send_mx, service, message("while down"))
        await asyncio.sleep(3)  # worker-in has tried and failed at least once
        assert await everything(bob) == []
        stats = await service.runtime.stores.queue.stats("incoming")
        assert stats.depth == 1  # waiting, not lost
        assert await service.runtime.stores.queue.list("error") == []
    finally:
        clamd.start()
    started = asyncio.get_running_loop().time()
    (inbox,) = await bob.wait_for("inbox", 1, timeout=20)
    assert inbox["subject"] == "while down"
    assert asyncio.get_running_loop().time() - started < 15
    assert await everything(bob) == [("inbox", "while down")]


# -- submission ----------------------------------------------------------------------


def submit(service: Service, sender: str, mail: EmailMessage) -> tuple[int, bytes]:
    """The reply to DATA (smtplib raises on anything but 250)."""
    with logged_in(service, sender) as client:
        try:
            client.send_message(mail, from_addr=sender, to_addrs=[mail["To"]])
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code, refused.smtp_error
        return 250, b""


def from_user(
    sender: User, *attachments: tuple[str, bytes, str], to: str = "bob@example.com"
) -> EmailMessage:
    mail = message("from a user", *attachments, to=to)
    del mail["From"]
    mail["From"] = sender.email
    return mail


async def test_a_user_submitting_eicar_or_a_program_is_refused_and_nothing_is_kept(
    service: Service, alice: User, bob: User
) -> None:
    infected = from_user(alice, ("eicar.com.txt", EICAR, "application/octet-stream"))
    code, text = await asyncio.to_thread(submit, service, alice.email, infected)
    assert (code, text[:5]) == (554, b"5.7.1")
    assert EICAR_NAME.encode() in text and b"virus" in text
    program = from_user(alice, ("invoice.pdf", PE, "application/pdf"))
    code, text = await asyncio.to_thread(submit, service, alice.email, program)
    assert (code, text[:5]) == (554, b"5.7.1")
    assert b"invoice.pdf: a Windows program" in text
    clean = from_user(alice, ("plan.pdf", PDF, "application/pdf"))
    assert await asyncio.to_thread(submit, service, alice.email, clean) == (250, b"")

    (inbox,) = await bob.wait_for("inbox", 1)
    assert inbox["subject"] == "from a user"
    assert [s for _, s in await everything(alice)] == ["from a user"]  # the clean one's Sent copy
    assert await everything(bob) == [("inbox", "from a user")]
    assert await outgoing(service) == []
    assert await service.runtime.stores.directory.list_quarantined() == []


async def test_a_submission_while_clamd_is_unreachable_is_told_to_try_later(
    start_service: StartService, tmp_path: Path
) -> None:
    nowhere = f"unix:{tmp_path}/no-clamd.sock"
    service = await start_service(
        {"filters": {"clamd": nowhere}, "smtp": {"insecure_auth_on_loopback": True}},
        data_dir=tmp_path / "other",
    )
    user = await service.user("carol")
    code, text = await asyncio.to_thread(
        submit, service, user.email, from_user(user, to=user.email)
    )
    assert (code, text[:5]) == (451, b"4.7.1")
    assert b"try again later" in text
    assert await everything(user) == []
