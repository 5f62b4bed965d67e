"""The hot routes build their JSON as plain dicts (``api/schemas.py``); the
pydantic models document the same shapes in /openapi.json. Each answer must be
exactly what its model would produce: same fields, same values, same formats."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from mailfleet.api.schemas import (
    AccountOut,
    AttachmentOut,
    FolderOut,
    MessageOut,
    PageOut,
    SummaryOut,
    ThreadOut,
    ThreadPageOut,
)
from tests.conftest import User


def assert_matches(model: type[BaseModel], payload: Any) -> None:
    parsed = model.model_validate(payload)
    assert parsed.model_dump(mode="json", by_alias=True) == payload


async def test_every_read_answers_its_documented_shape(alice: User, bob: User) -> None:
    upload = await alice.upload("notes.txt", b"hello", "text/plain")
    assert_matches(AttachmentOut, upload)
    await alice.send(
        to=[bob.email],
        cc=[{"name": "Alice Again", "email": alice.email}],
        subject="Schemas",
        body="plain text",
        html="<p>html <b>part</b></p>",
        attachments=[upload["id"]],
    )
    (message,) = await bob.wait_for("inbox", 1)
    inbox = await bob.folder("inbox")

    async def get(path: str, **params: Any) -> Any:
        response = await bob.client.get(path, params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    assert_matches(AccountOut, await get("/v1/me"))
    folders = await get("/v1/folders")
    assert (
        TypeAdapter(list[FolderOut]).dump_python(
            TypeAdapter(list[FolderOut]).validate_python(folders), mode="json"
        )
        == folders
    )
    page = await get(f"/v1/folders/{inbox['id']}/messages")
    assert_matches(PageOut, page)
    assert page["items"][0]["received_at"].endswith("Z")
    assert_matches(ThreadPageOut, await get(f"/v1/folders/{inbox['id']}/messages", group="thread"))
    full = await get(f"/v1/messages/{message['id']}")
    assert_matches(MessageOut, full)
    assert full["html"] and full["attachments"][0]["filename"] == "notes.txt"
    assert_matches(ThreadOut, await get(f"/v1/threads/{message['thread_id']}"))
    assert_matches(PageOut, await get("/v1/search", q="schemas"))

    # The sender's copy carries delivery per recipient.
    (sent,) = await alice.wait_for("sent", 1)
    assert_matches(MessageOut, (await alice.client.get(f"/v1/messages/{sent['id']}")).json())

    patched = await bob.client.patch(f"/v1/messages/{message['id']}", json={"is_read": True})
    assert_matches(SummaryOut, patched.json())
    created = await bob.client.post("/v1/folders", json={"name": "Projects"})
    assert created.status_code == 201
    assert_matches(FolderOut, created.json())
