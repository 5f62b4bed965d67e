"""``GET /v1/events/ws``: replay from a cursor, live push, the refusals, and
the sockets closed when their session ends; a real client (``websockets``)."""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import connect

from ..conftest import Service, User
from .conftest import flag, head, receive, receive_until_closed, socket, ws_url


async def test_replays_after_the_cursor_then_pushes_each_change(
    alice: User, bob: User, service: Service
) -> None:
    start = await head(alice)
    await bob.send(to=[alice.email], subject="before")
    (message,) = await alice.messages("inbox")
    async with socket(service, alice, cursor=start) as ws:
        replayed = await receive(ws, 2)
        assert [(e["type"], e["cursor"]) for e in replayed] == [
            ("message.new", str(int(start) + 1)),
            ("folder.updated", str(int(start) + 2)),
        ]
        assert replayed[0]["data"]["id"] == message["id"]
        began = time.monotonic()
        await flag(alice, message["id"])
        (live,) = await receive(ws, 1)
        assert time.monotonic() - began < 0.5
        assert live["type"] == "message.updated"
        assert live["cursor"] == str(int(start) + 3)
        assert live["data"] == {
            "id": message["id"],
            "folder_id": message["folder_id"],
            "thread_id": message["thread_id"],
            "is_read": False,
            "is_flagged": True,
        }


async def test_token_and_cursor_in_the_query(alice: User, bob: User, service: Service) -> None:
    start = await head(alice)
    await bob.send(to=[alice.email])
    url = ws_url(service, token=alice.token, cursor=start)
    async with connect(url, proxy=None) as ws:
        events = await receive(ws, 2)
    assert [e["cursor"] for e in events] == [str(int(start) + 1), str(int(start) + 2)]


async def test_no_cursor_starts_from_now(alice: User, bob: User, service: Service) -> None:
    await bob.send(to=[alice.email])
    (message,) = await alice.messages("inbox")
    current = await head(alice)
    async with socket(service, alice) as ws:
        await asyncio.sleep(0.2)  # the server has read the head before the change
        await flag(alice, message["id"])
        (event,) = await receive(ws, 1)
    assert event["cursor"] == str(int(current) + 1)


async def test_refusals_close_with_a_code_and_reason(alice: User, service: Service) -> None:
    cases: list[tuple[str | None, int, str]] = [
        (json.dumps({"token": "not-a-token"}), 4401, "token"),
        (json.dumps({"token": alice.token, "cursor": "abc"}), 4400, "cursor"),
        (json.dumps({"token": alice.token, "cursor": 5}), 4400, "cursor"),
        ("hello", 4400, "token"),
        (json.dumps(["token"]), 4400, "token"),
        (None, 4408, "no token within 0.5 s"),  # sends nothing
    ]
    for frame, code, reason in cases:
        async with connect(ws_url(service), proxy=None) as ws:
            if frame is not None:
                await ws.send(frame)
            began = time.monotonic()
            assert await receive_until_closed(ws) == []
            assert ws.close_code == code, frame
            assert ws.close_reason and reason in ws.close_reason, ws.close_reason
            if frame is None:
                assert 0.4 < time.monotonic() - began < 2
    async with connect(ws_url(service, token="nope"), proxy=None) as ws:
        assert await receive_until_closed(ws) == []
        assert ws.close_code == 4401


async def test_logout_closes_the_socket_within_5_seconds(alice: User, service: Service) -> None:
    async with socket(service, alice) as ws:
        await asyncio.sleep(0.1)
        began = time.monotonic()
        response = await alice.client.delete("/v1/sessions/current")
        assert response.status_code == 204
        assert await receive_until_closed(ws, timeout=5) == []
        assert time.monotonic() - began < 5
        assert ws.close_code == 4401
        assert "session ended" in (ws.close_reason or "")
        assert (await alice.client.get("/v1/events")).status_code == 401


async def test_disabling_the_account_closes_its_sockets(alice: User, service: Service) -> None:
    async with socket(service, alice) as first, socket(service, alice) as second:
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await service.runtime.accounts.set_disabled(alice.email, True)
        for ws in (first, second):
            assert await receive_until_closed(ws, timeout=5) == []
            assert ws.close_code == 4401
        assert time.monotonic() - began < 5


async def test_a_closed_client_ends_its_subscription(alice: User, service: Service) -> None:
    async with socket(service, alice) as ws:
        await asyncio.sleep(0.1)
        assert service.runtime.feed.watched() == {int(alice.id): 1}
        await ws.close()
    async with asyncio.timeout(2):
        while service.runtime.feed.watched():  # noqa: ASYNC110 (the server's state, polled)
            await asyncio.sleep(0.02)


async def test_server_shutdown_closes_sockets_with_1012(alice: User, service: Service) -> None:
    async with socket(service, alice) as ws:
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(service.close())
        assert await receive_until_closed(ws) == []
        assert ws.close_code == 1012
        began = time.monotonic()
        await stopping
        assert time.monotonic() - began < 2
