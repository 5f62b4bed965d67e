"""Flags, read state, moves, Trash semantics, user folders; counters stay right."""

from __future__ import annotations

from typing import Any

from tests.conftest import User


async def _counts(user: User) -> dict[str, tuple[int, int]]:
    folders = (await user.client.get("/v1/folders")).json()
    return {f["role"] or f["name"]: (f["total"], f["unread"]) for f in folders}


async def _three(alice: User, bob: User) -> list[dict[str, Any]]:
    for subject in ("one", "two", "three"):
        await alice.send(to=[bob.email], subject=subject)
    return await bob.messages("inbox")


async def test_flag_read_unread(alice: User, bob: User) -> None:
    three, two, _ = await _three(alice, bob)
    assert (await _counts(bob))["inbox"] == (3, 3)

    r = await bob.client.patch(f"/v1/messages/{three['id']}", json={"is_read": True})
    assert r.status_code == 200
    assert r.json()["is_read"] is True and r.json()["id"] == three["id"]
    assert (await _counts(bob))["inbox"] == (3, 2)

    # Repeating a change changes nothing.
    await bob.client.patch(f"/v1/messages/{three['id']}", json={"is_read": True})
    assert (await _counts(bob))["inbox"] == (3, 2)

    r = await bob.client.patch(f"/v1/messages/{two['id']}", json={"is_flagged": True})
    assert r.json()["is_flagged"] is True and r.json()["is_read"] is False
    full = (await bob.client.get(f"/v1/messages/{two['id']}")).json()
    assert full["is_flagged"] is True

    r = await bob.client.patch(f"/v1/messages/{three['id']}", json={"is_read": False})
    assert r.json()["is_read"] is False
    assert (await _counts(bob))["inbox"] == (3, 3)


async def test_move_between_folders_keeps_counts(alice: User, bob: User) -> None:
    three, two, one = await _three(alice, bob)
    await bob.client.patch(f"/v1/messages/{one['id']}", json={"is_read": True})
    archive = await bob.folder("archive")

    r = await bob.client.patch(f"/v1/messages/{one['id']}", json={"folder_id": archive["id"]})
    assert r.status_code == 200 and r.json()["folder_id"] == archive["id"]
    r = await bob.client.patch(
        f"/v1/messages/{two['id']}", json={"folder_id": archive["id"], "is_read": True}
    )
    assert r.json()["is_read"] is True
    counts = await _counts(bob)
    assert counts["inbox"] == (1, 1)
    assert counts["archive"] == (2, 0)
    assert [m["id"] for m in await bob.messages("archive")] == [two["id"], one["id"]]
    assert [m["id"] for m in await bob.messages("inbox")] == [three["id"]]


async def test_delete_moves_to_trash_then_deletes_for_good(alice: User, bob: User) -> None:
    three, _, _ = await _three(alice, bob)
    assert (await bob.client.delete(f"/v1/messages/{three['id']}")).status_code == 204
    counts = await _counts(bob)
    assert counts["inbox"] == (2, 2)
    assert counts["trash"] == (1, 1)
    (trashed,) = await bob.messages("trash")
    assert trashed["id"] == three["id"]

    assert (await bob.client.delete(f"/v1/messages/{three['id']}")).status_code == 204
    assert (await _counts(bob))["trash"] == (0, 0)
    gone = await bob.client.get(f"/v1/messages/{three['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "message_not_found"
    assert (await bob.client.delete(f"/v1/messages/{three['id']}")).status_code == 404
    # The sender's copy is untouched.
    assert len(await alice.messages("sent")) == 3


async def test_user_folders_create_rename_delete(alice: User, bob: User) -> None:
    r = await bob.client.post("/v1/folders", json={"name": "Receipts"})
    assert r.status_code == 201
    folder = r.json()
    assert folder["role"] is None and folder["total"] == 0 and folder["user_id"] == bob.id

    dup = await bob.client.post("/v1/folders", json={"name": "receipts"})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "folder_exists"
    clash = await bob.client.post("/v1/folders", json={"name": "INBOX"})
    assert clash.status_code == 409

    r = await bob.client.patch(f"/v1/folders/{folder['id']}", json={"name": "Bills"})
    assert r.status_code == 200 and r.json()["name"] == "Bills"

    three, two, _ = await _three(alice, bob)
    for m in (three, two):
        await bob.client.patch(f"/v1/messages/{m['id']}", json={"folder_id": folder["id"]})
    await bob.client.patch(f"/v1/messages/{two['id']}", json={"is_read": True})
    assert (await _counts(bob))["Bills"] == (2, 1)

    assert (await bob.client.delete(f"/v1/folders/{folder['id']}")).status_code == 204
    counts = await _counts(bob)
    assert "Bills" not in counts
    assert counts["trash"] == (2, 1)
    assert {m["id"] for m in await bob.messages("trash")} == {three["id"], two["id"]}


async def test_system_folders_cannot_be_renamed_or_deleted(bob: User) -> None:
    inbox = await bob.folder("inbox")
    r = await bob.client.patch(f"/v1/folders/{inbox['id']}", json={"name": "Other"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "system_folder"
    r = await bob.client.delete(f"/v1/folders/{inbox['id']}")
    assert r.status_code == 422
    r = await bob.client.post("/v1/folders", json={"name": "   "})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_folder_name"
