"""Sending between hosted accounts (API.md "Sending"; issue 2, local delivery)."""

from __future__ import annotations

import email
import os
from email import policy

from tests.conftest import DOMAIN, Service, User

PDF = b"%PDF-1.4\n" + os.urandom(50_000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3_000)


async def test_alice_to_bob_with_to_cc_bcc_and_two_attachments(
    service: Service, alice: User, bob: User
) -> None:
    carol = await service.user("carol")
    dave = await service.user("dave")
    pdf = await alice.upload("report ü.pdf", PDF, "application/pdf")
    png = await alice.upload("chart.png", PNG, "image/png")
    assert pdf["size"] == len(PDF) and pdf["content_type"] == "application/pdf"

    sent = await alice.send(
        to=[{"name": "Bob Example", "email": bob.email}],
        cc=[carol.email],
        bcc=[dave.email],
        subject="Quarterly report",
        body="Hi Bob,\nthe report is attached.\n",
        attachments=[pdf["id"], png["id"]],
    )
    assert sent["status"] == "queued"

    inbox = await bob.messages("inbox")
    assert len(inbox) == 1
    summary = inbox[0]
    assert summary["subject"] == "Quarterly report"
    assert summary["is_read"] is False
    assert summary["has_attachments"] is True
    assert summary["from"] == {"name": "Alice Example", "email": alice.email}
    assert summary["to"] == [{"name": "Bob Example", "email": bob.email}]
    assert summary["snippet"].startswith("Hi Bob, the report is attached.")
    assert (await bob.folder("inbox"))["unread"] == 1

    full = (await bob.client.get(f"/v1/messages/{summary['id']}")).json()
    assert full["bcc"] == []
    assert full["cc"] == [{"name": "", "email": carol.email}]
    assert full["body"] == "Hi Bob,\nthe report is attached.\n"
    assert full["user_id"] == bob.id
    assert full["message_id_header"].startswith("<") and full["message_id_header"].endswith(">")
    assert [(a["filename"], a["size"]) for a in full["attachments"]] == [
        ("report ü.pdf", len(PDF)),
        ("chart.png", len(PNG)),
    ]
    for attachment, data in zip(full["attachments"], (PDF, PNG), strict=True):
        download = await bob.client.get(
            f"/v1/messages/{summary['id']}/attachments/{attachment['id']}"
        )
        assert download.status_code == 200
        assert download.content == data
        assert download.headers["content-disposition"].startswith("attachment;")
        assert download.headers["x-content-type-options"] == "nosniff"
        assert download.headers["content-type"].startswith(attachment["content_type"])

    raw = await bob.client.get(f"/v1/messages/{summary['id']}/raw")
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert dave.email.encode() not in raw.content
    parsed = email.message_from_bytes(raw.content, policy=policy.default)
    assert "Bcc" not in parsed
    assert b"bcc:" not in raw.content.split(b"\r\n\r\n", 1)[0].lower()
    assert parsed["Subject"] == "Quarterly report"
    assert parsed["Message-ID"] == full["message_id_header"]
    assert parsed["Date"] is not None
    assert parsed.get_content_type() == "multipart/mixed"
    parts = {p.get_filename(): p.get_content() for p in parsed.iter_attachments()}
    assert parts == {"report ü.pdf": PDF, "chart.png": PNG}

    # Cc and Bcc recipients got it; only the sender's copy lists the Bcc.
    for user in (carol, dave):
        assert [m["subject"] for m in await user.messages("inbox")] == ["Quarterly report"]
    dave_copy = (await dave.messages("inbox"))[0]
    assert (await dave.client.get(f"/v1/messages/{dave_copy['id']}")).json()["bcc"] == []

    sent_items = await alice.messages("sent")
    assert [m["id"] for m in sent_items] == [sent["id"]]
    assert sent_items[0]["is_read"] is True
    own = (await alice.client.get(f"/v1/messages/{sent['id']}")).json()
    assert own["bcc"] == [{"name": "", "email": dave.email}]
    assert {d["email"]: d["status"] for d in own["delivery"]} == {
        bob.email: "delivered",
        carol.email: "delivered",
        dave.email: "delivered",
    }
    assert (await alice.messages("inbox")) == []


async def test_attachments_are_stored_once_however_many_recipients(
    service: Service, alice: User
) -> None:
    recipients = [await service.user(f"r{i}") for i in range(5)]
    upload = await alice.upload("big.bin", PDF, "application/octet-stream")
    before = await service.stored_blobs()
    await alice.send(to=[r.email for r in recipients], subject="s", attachments=[upload["id"]])
    after = await service.stored_blobs()
    added = after.keys() - before.keys()
    # The raw message (shared by every copy) and the body text; no copy of the
    # attachment per recipient.
    assert len(added) == 2, added
    assert sum(after.values()) < 3 * len(PDF)
    for r in recipients:
        (message,) = await r.messages("inbox")
        full = (await r.client.get(f"/v1/messages/{message['id']}")).json()
        (att,) = full["attachments"]
        data = await r.client.get(f"/v1/messages/{message['id']}/attachments/{att['id']}")
        assert data.content == PDF


async def test_remote_recipients_are_queued_for_outgoing(
    service: Service, alice: User, bob: User
) -> None:
    sent = await alice.send(
        to=[bob.email, "x@remote.example", "y@remote.example"], cc=["z@other.example"]
    )
    own = (await alice.client.get(f"/v1/messages/{sent['id']}")).json()
    assert {d["email"]: d["status"] for d in own["delivery"]} == {
        bob.email: "delivered",
        "x@remote.example": "queued",
        "y@remote.example": "queued",
        "z@other.example": "queued",
    }
    items = await service.runtime.stores.queue.list("outgoing")
    by_domain = {item.payload["domain"]: item.payload for item in items}
    assert set(by_domain) == {"remote.example", "other.example"}
    assert by_domain["remote.example"]["recipients"] == ["x@remote.example", "y@remote.example"]
    assert str(by_domain["remote.example"]["message_id"]) == sent["id"]
    # The queue carries a reference to the stored raw message, never the bytes.
    raw_hash = by_domain["other.example"]["raw_hash"]
    assert await service.runtime.stores.blobs.exists(raw_hash)


async def test_html_only_mail_is_sanitized_and_gets_a_text_body(alice: User, bob: User) -> None:
    await alice.send(
        to=[bob.email],
        subject="html",
        html='<p>Hello <b>Bob</b></p><script>alert(1)</script><img src="x" onerror="alert(2)">',
    )
    (message,) = await bob.messages("inbox")
    full = (await bob.client.get(f"/v1/messages/{message['id']}")).json()
    assert "Hello Bob" in full["body"]
    assert "<b>Bob</b>" in full["html"]
    assert "script" not in full["html"] and "onerror" not in full["html"]


async def test_reply_sets_in_reply_to_references_and_thread(alice: User, bob: User) -> None:
    first = await alice.send(to=[bob.email], subject="Plan", body="Shall we?")
    (received,) = await bob.messages("inbox")
    reply = await bob.send(
        to=[alice.email], subject="Re: Plan", body="Yes.", in_reply_to=received["id"]
    )
    original = (await alice.client.get(f"/v1/messages/{first['id']}")).json()
    (answer,) = await alice.messages("inbox")
    full = (await alice.client.get(f"/v1/messages/{answer['id']}")).json()
    assert full["in_reply_to"] == original["message_id_header"]
    assert full["references"] == [original["message_id_header"]]
    assert full["thread_id"] == original["thread_id"]
    bob_sent = (await bob.client.get(f"/v1/messages/{reply['id']}")).json()
    assert bob_sent["thread_id"] == received["thread_id"]


async def test_unicode_names_and_subjects_survive(alice: User, bob: User) -> None:
    await alice.send(
        to=[{"name": "Bøb Ünïcødé 김", "email": bob.email}], subject="Grüße — 안녕하세요", body="ß"
    )
    (message,) = await bob.messages("inbox")
    assert message["subject"] == "Grüße — 안녕하세요"
    assert message["to"][0]["name"] == "Bøb Ünïcødé 김"
    raw = (await bob.client.get(f"/v1/messages/{message['id']}/raw")).content
    assert raw.isascii()  # headers RFC 2047-encoded, body quoted-printable
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Grüße — 안녕하세요"
    assert parsed.get_content().splitlines() == ["ß"]


async def test_sending_to_yourself_lands_in_sent_and_inbox(alice: User) -> None:
    await alice.send(to=[alice.email], subject="note to self")
    assert [m["subject"] for m in await alice.messages("inbox")] == ["note to self"]
    assert [m["subject"] for m in await alice.messages("sent")] == ["note to self"]


async def test_recipient_domain_case_and_duplicates(
    service: Service, alice: User, bob: User
) -> None:
    await alice.send(to=[f"BOB@{DOMAIN.upper()}", bob.email], cc=[bob.email])
    assert len(await bob.messages("inbox")) == 1
