"""Keyset pagination of folder listings (API.md "Lists are paginated")."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Service, User


async def _walk(user: User, folder_id: str, **params: object) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = await user.client.get(f"/v1/folders/{folder_id}/messages", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= int(str(params.get("limit", 50)))
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


async def test_pagination_over_500_messages(service: Service, alice: User, bob: User) -> None:
    sem = asyncio.Semaphore(8)

    async def send(i: int) -> str:
        async with sem:
            return str((await alice.send(to=[bob.email], subject=f"m{i:03d}"))["id"])

    await asyncio.gather(*(send(i) for i in range(500)))
    inbox = await bob.folder("inbox")
    assert inbox["total"] == 500 and inbox["unread"] == 500

    # Mark every third one read, so the unread filter has gaps to skip.
    first_pass = await _walk(bob, inbox["id"], limit=200)
    read_ids = {m["id"] for m in first_pass[::3]}
    sem2 = asyncio.Semaphore(8)

    async def mark(mid: str) -> None:
        async with sem2:
            r = await bob.client.patch(f"/v1/messages/{mid}", json={"is_read": True})
            assert r.status_code == 200

    await asyncio.gather(*(mark(mid) for mid in read_ids))

    for limit in (7, 50, 200):
        everything = await _walk(bob, inbox["id"], limit=limit)
        ids = [m["id"] for m in everything]
        assert len(ids) == 500 and len(set(ids)) == 500
        keys = [(m["received_at"], int(str(m["id"]))) for m in everything]
        assert keys == sorted(keys, reverse=True), "newest first"

        unread = await _walk(bob, inbox["id"], limit=limit, is_read="false")
        unread_ids = [m["id"] for m in unread]
        assert len(unread_ids) == len(set(unread_ids)) == 500 - len(read_ids)
        assert set(unread_ids) == set(ids) - read_ids
        assert all(m["is_read"] is False for m in unread)
        assert [m["id"] for m in everything if m["id"] not in read_ids] == unread_ids

        read = await _walk(bob, inbox["id"], limit=limit, is_read="true")
        assert {m["id"] for m in read} == read_ids

    assert (await bob.folder("inbox"))["unread"] == 500 - len(read_ids)


async def test_default_and_maximum_page_size(alice: User, bob: User) -> None:
    for i in range(60):
        await alice.send(to=[bob.email], subject=f"m{i}")
    inbox = await bob.folder("inbox")
    page = (await bob.client.get(f"/v1/folders/{inbox['id']}/messages")).json()
    assert len(page["items"]) == 50 and page["next_cursor"]
    too_big = await bob.client.get(f"/v1/folders/{inbox['id']}/messages", params={"limit": 201})
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == "invalid_field"


@pytest.mark.parametrize("cursor", ["garbage!", "bm90LWEtY3Vyc29y", "", "MTIz"])
async def test_bad_cursor_is_a_clear_400(bob: User, cursor: str) -> None:
    inbox = await bob.folder("inbox")
    response = await bob.client.get(
        f"/v1/folders/{inbox['id']}/messages", params={"cursor": cursor}
    )
    if cursor == "":
        assert response.status_code == 200  # no cursor: the first page
    else:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"
