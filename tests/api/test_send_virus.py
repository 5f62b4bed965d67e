"""``POST /v1/messages`` with a virus or a blocked attachment (issue 13 point
5): 422 with ``virus_found`` / ``attachment_blocked`` and what was found,
nothing stored, nothing queued; clamd unreachable: 503, try later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service, StartService, User
from tests.support.clamd import CUSTOM_MARKER, CUSTOM_NAME, EICAR, EICAR_NAME, Clamd

PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\0" * 64 + b"PE\0\0"
PDF = b"%PDF-1.4\n" + os.urandom(5_000) + b"\n%%EOF\n"


@pytest.fixture
async def service(start_service: StartService, clamd: Clamd) -> Service:
    return await start_service({"filters": {"clamd": clamd.tcp_url}})


async def nothing_kept(service: Service, *users: User) -> None:
    for user in users:
        for folder in (await user.client.get("/v1/folders")).json():
            assert folder["total"] == 0, (user.email, folder["role"])
    assert await service.runtime.stores.queue.list("outgoing") == []


async def refused(sender: User, **body: Any) -> dict[str, Any]:
    response = await sender.client.post("/v1/messages", json={"subject": "Files", **body})
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_eicar_attached_is_refused_with_the_signature_and_nothing_is_kept(
    service: Service, alice: User, bob: User
) -> None:
    eicar = await alice.upload("eicar.txt", EICAR, "text/plain")
    error = await refused(
        alice, to=[bob.email, "carol@remote.example"], body="see", attachments=[eicar["id"]]
    )
    assert error["code"] == "virus_found"
    assert EICAR_NAME in error["message"]
    custom = await alice.upload("notes.txt", b"notes\n" + CUSTOM_MARKER, "text/plain")
    error = await refused(alice, to=[bob.email], body="see", attachments=[custom["id"]])
    assert (error["code"], CUSTOM_NAME in error["message"]) == ("virus_found", True)
    # In the body itself, no attachment at all.
    error = await refused(alice, to=[bob.email], body=EICAR.decode())
    assert error["code"] == "virus_found"
    await nothing_kept(service, alice, bob)

    pdf = await alice.upload("plan.pdf", PDF, "application/pdf")
    await alice.send(to=[bob.email], body="the plan", attachments=[pdf["id"]])
    assert [m["subject"] for m in await bob.messages("inbox")] == ["Hello"]


async def test_programs_are_refused_by_name_and_by_content(
    service: Service, alice: User, bob: User
) -> None:
    renamed = await alice.upload("invoice.pdf", PE, "application/pdf")
    error = await refused(alice, to=[bob.email], body="see", attachments=[renamed["id"]])
    assert error == {
        "code": "attachment_blocked",
        "message": "attachments of this type cannot be sent"
        " (invoice.pdf: a Windows program (MZ header))",
    }
    script = await alice.upload("run.vbs", b"MsgBox 1", "text/plain")
    error = await refused(alice, to=[bob.email], body="see", attachments=[script["id"]])
    assert error["code"] == "attachment_blocked"
    assert "run.vbs: files of type .vbs are not allowed" in error["message"]
    await nothing_kept(service, alice, bob)


async def test_clamd_unreachable_answers_503_try_later(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service({"filters": {"clamd": f"unix:{tmp_path}/none.sock"}})
    alice, bob = await service.user("alice"), await service.user("bob")
    response = await alice.client.post(
        "/v1/messages", json={"to": [bob.email], "subject": "Hi", "body": "hello"}
    )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "scanner_unavailable"
    assert "try again later" in error["message"]
    await nothing_kept(service, alice, bob)
