"""A message whose stored bytes are lost or damaged (its blob deleted from the
directory, the pack or the S3 bucket, or overwritten): the message still
opens with what its metadata holds and says its body is unavailable; the
source and attachment downloads answer a JSON error. Never a reset
connection, never a 500."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from mailfleet.storage.interfaces import Message
from tests.conftest import Service, User
from tests.support.profile import damage_stored_blob

PDF = b"%PDF-1.7\n" + os.urandom(200_000) + b"\n%%EOF\n"  # a file, past the pack's limit


async def _delivered(service: Service, alice: User, bob: User) -> tuple[dict[str, Any], Message]:
    """A mail from Alice in Bob's Inbox, with text, HTML and an attachment,
    and its record (which names its blobs)."""
    attachment = await alice.upload("plan.pdf", PDF, "application/pdf")
    await alice.send(
        to=[bob.email],
        subject="The plan",
        body="Hi Bob, the plan is attached.",
        html="<p>Hi Bob, the plan is <b>attached</b>.</p>",
        attachments=[attachment["id"]],
    )
    (summary,) = await bob.wait_for("inbox", 1)
    message = await service.runtime.stores.mailbox.get_message(int(bob.id), int(summary["id"]))
    assert message is not None and message.body_hash and message.html_hash
    return summary, message


@pytest.mark.parametrize("damage", ["deleted", "overwritten"])
async def test_message_with_a_lost_body_opens_with_a_notice(
    service: Service, alice: User, bob: User, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    summary, message = await _delivered(service, alice, bob)
    before = (await bob.client.get(f"/v1/messages/{summary['id']}")).json()
    assert before["body_unavailable"] is False
    assert before["body"].startswith("Hi Bob")

    replacement = None if damage == "deleted" else b"\xff\xfe not the body that was stored"
    await damage_stored_blob(service.runtime.stores.blobs, message.body_hash, replacement)
    with caplog.at_level(logging.ERROR, logger="mailfleet.mailbox"):
        response = await bob.client.get(f"/v1/messages/{summary['id']}")

    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["body_unavailable"] is True
    assert shown["body"] == "" and shown["html"] is None
    # Everything the metadata holds is still there.
    for field in ("id", "subject", "from", "to", "snippet", "received_at", "message_id_header"):
        assert shown[field] == before[field], field
    assert [a["filename"] for a in shown["attachments"]] == ["plan.pdf"]
    assert any("body unreadable" in r.getMessage() for r in caplog.records)

    # The mailbox goes on working around it: listed, moved, searched by subject.
    assert [m["id"] for m in await bob.messages("inbox")] == [summary["id"]]
    archive = await bob.folder("archive")
    moved = await bob.client.patch(
        f"/v1/messages/{summary['id']}", json={"folder_id": archive["id"], "is_read": True}
    )
    assert moved.status_code == 200, moved.text


@pytest.mark.parametrize("damage", ["deleted", "overwritten"])
async def test_lost_source_and_attachment_answer_a_json_404(
    service: Service, alice: User, bob: User, damage: str
) -> None:
    summary, message = await _delivered(service, alice, bob)
    (attachment,) = message.attachments
    blobs = service.runtime.stores.blobs
    replacement = None if damage == "deleted" else b"other bytes"
    await damage_stored_blob(blobs, message.raw_hash, replacement)
    await damage_stored_blob(blobs, attachment.blob_hash, replacement)

    raw = await bob.client.get(f"/v1/messages/{summary['id']}/raw")
    assert raw.status_code == 404, raw.text
    assert raw.json()["error"]["code"] == "content_unavailable"
    assert "source" in raw.json()["error"]["message"]

    download = await bob.client.get(f"/v1/messages/{summary['id']}/attachments/{attachment.id}")
    assert download.status_code == 404, download.text
    assert download.json()["error"]["code"] == "content_unavailable"

    # The message itself, whose body is intact, opens as before.
    shown = (await bob.client.get(f"/v1/messages/{summary['id']}")).json()
    assert shown["body_unavailable"] is False
    assert shown["body"].startswith("Hi Bob")
    # A message that does not exist is still told apart.
    missing = await bob.client.get("/v1/messages/12345/raw")
    assert missing.json()["error"]["code"] == "message_not_found"
