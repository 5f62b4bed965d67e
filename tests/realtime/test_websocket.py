"""``GET /v1/events/ws``: replay from a cursor, live push, the refusals, and
the sockets closed when their session ends; a real client (``websockets``)."""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from ..conftest import Service, StartService, User
from .conftest import flag, head, receive, receive_until_closed, socket, ws_url


async def test_replays_after_the_cursor_then_pushes_each_change(
    alice: User, bob: User, service: Service
) -> None:
    start = await head(alice)
    await bob.send(to=[alice.email], subject="before")
    (message,) = await alice.messages("inbox")
    query = connect(ws_url(service, token=alice.token, cursor=start), proxy=None)
    async with socket(service, alice, cursor=start) as ws, query as by_query:
        for client in (ws, by_query):
            replayed = await receive(client, 2)
            assert [(e["type"], e["cursor"]) for e in replayed] == [
                ("message.new", str(int(start) + 1)),
                ("folder.updated", str(int(start) + 2)),
            ]
            assert replayed[0]["data"]["id"] == message["id"]
        async with socket(service, alice) as from_now:
            # The server follows all three (it has read the head before the change).
            async with asyncio.timeout(10):
                while service.runtime.feed.watched() != {int(alice.id): 3}:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            began = time.monotonic()
            await flag(alice, message["id"])
            for client in (ws, by_query, from_now):
                (live,) = await receive(client, 1)
                assert time.monotonic() - began < 5  # pushed (a loaded machine is slow)
                assert live == {
                    "type": "message.updated",
                    "cursor": str(int(start) + 3),
                    "data": {
                        "id": message["id"],
                        "folder_id": message["folder_id"],
                        "thread_id": message["thread_id"],
                        "is_read": False,
                        "is_flagged": True,
                    },
                }


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
                assert 0.4 < time.monotonic() - began < 10
    async with connect(ws_url(service, token="nope"), proxy=None) as ws:
        assert await receive_until_closed(ws) == []
        assert ws.close_code == 4401


async def test_logout_or_a_disabled_account_closes_sockets_within_5_seconds(
    alice: User, bob: User, service: Service
) -> None:
    async with (
        socket(service, alice) as alices,
        socket(service, bob) as bobs_first,
        socket(service, bob) as bobs_second,
    ):
        await asyncio.sleep(0.1)
        began = time.monotonic()
        assert (await alice.client.delete("/v1/sessions/current")).status_code == 204
        await service.runtime.accounts.set_disabled(bob.email, True)
        for ws in (alices, bobs_first, bobs_second):
            assert await receive_until_closed(ws, timeout=5) == []
            assert ws.close_code == 4401
            assert "session ended" in (ws.close_reason or "")
        assert time.monotonic() - began < 5
        assert (await alice.client.get("/v1/events")).status_code == 401


async def test_subscriptions_end_with_their_socket_and_shutdown_closes_with_1012(
    alice: User, service: Service
) -> None:
    async with socket(service, alice) as ws:
        async with asyncio.timeout(10):
            while service.runtime.feed.watched() != {int(alice.id): 1}:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await ws.close()
    async with asyncio.timeout(2):
        while service.runtime.feed.watched():  # noqa: ASYNC110 (the server's state, polled)
            await asyncio.sleep(0.02)

    async with socket(service, alice) as ws:
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(service.close())
        assert await receive_until_closed(ws) == []
        assert ws.close_code == 1012
        began = time.monotonic()
        await stopping
        assert time.monotonic() - began < 10


async def test_heartbeat_pings_and_a_client_that_never_answers_is_closed(
    start_service: StartService,
) -> None:
    service = await start_service(
        {"realtime": {"heartbeat_seconds": 0.2, "heartbeat_timeout_seconds": 0.3}}
    )
    alice = await service.user("alice")
    # A bare protocol client: it shows the frames it gets and answers nothing.
    client = ClientProtocol(parse_uri(ws_url(service, token=alice.token)))
    reader, writer = await asyncio.open_connection(*service.server.http_address)
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))
    frames: list[Frame] = []
    began = time.monotonic()
    async with asyncio.timeout(10):
        while client.close_rcvd is None:
            data = await reader.read(65536)
            if not data:
                break
            client.receive_data(data)
            frames += [e for e in client.events_received() if isinstance(e, Frame)]
    writer.close()
    opcodes = [f.opcode for f in frames]
    assert opcodes[0] == Opcode.PING
    assert opcodes[-1] == Opcode.CLOSE
    assert client.close_rcvd is not None
    assert client.close_rcvd.code == 1011  # keepalive ping timeout
    assert 0.4 < time.monotonic() - began < 8  # after the timeout, not a ping later
