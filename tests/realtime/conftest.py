"""Clients of the realtime role: a WebSocket client (the ``websockets``
library) and the long poll over httpx, against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mailfleet.ids import new_id, now_ms
from mailfleet.proto.addresses import Address
from mailfleet.storage.interfaces import MessagePatch, NewMessage

from ..conftest import Service, StartService, User

# Quick timers so that what they bound is seen within a test's time.
REALTIME = {
    # Not a timer that closes sockets at logout: revocations on the bus do.
    "auth_check_seconds": 600,
    "auth_timeout_seconds": 0.5,
    "poll_seconds": 1,
}


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service({"realtime": REALTIME})


def ws_url(service: Service, **query: str) -> str:
    url = service.base_url.replace("http://", "ws://") + "/v1/events/ws"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


@asynccontextmanager
async def socket(
    service: Service, user: User | None = None, cursor: str | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A WebSocket that has sent its first frame (token and cursor) when a user is given."""
    options.setdefault("proxy", None)
    async with connect(ws_url(service), open_timeout=5, **options) as ws:
        if user is not None:
            frame: dict[str, str] = {"token": user.token}
            if cursor is not None:
                frame["cursor"] = cursor
            await ws.send(json.dumps(frame))
        yield ws


async def receive(ws: ClientConnection, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    """The next ``count`` events."""
    events = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            events.append(json.loads(await ws.recv()))
    return events


async def receive_until_closed(ws: ClientConnection, timeout: float = 5) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                events.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
    return events


async def head(user: User) -> str:
    """The account's current cursor, as a long poll that waits for nothing tells it."""
    response = await user.client.get("/v1/events", params={"timeout": 0})
    assert response.status_code == 200, response.text
    cursor: str = response.json()["cursor"]
    return cursor


async def flag(user: User, message_id: str, flagged: bool = True) -> None:
    response = await user.client.patch(f"/v1/messages/{message_id}", json={"is_flagged": flagged})
    assert response.status_code == 200, response.text


async def poll(user: User, cursor: str | None, timeout: float = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": timeout}
    if cursor is not None:
        params["cursor"] = cursor
    response = await user.client.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def churn(service: Service, user: User, message_id: str, count: int) -> None:
    """``count`` changes to the account (the message flagged, unflagged, ...),
    written to the mailbox store directly: quicker than as many PATCH requests."""
    mailbox = service.runtime.stores.mailbox
    account_id, mid = int(user.id), int(message_id)
    message = await mailbox.get_message(account_id, mid)
    assert message is not None
    flagged = message.summary.is_flagged
    for _ in range(count):
        flagged = not flagged
        await mailbox.update_message(account_id, mid, MessagePatch(is_flagged=flagged))


async def store_mail(service: Service, user: User, count: int) -> None:
    """``count`` new messages in the user's Inbox in one transaction: ``count``
    ``message.new`` changes and one ``folder.updated``."""
    mailbox = service.runtime.stores.mailbox
    inbox = await mailbox.folder_by_role(int(user.id), "inbox")
    messages = []
    for n in range(count):
        mid = new_id()
        messages.append(
            NewMessage(
                account_id=int(user.id),
                id=mid,
                folder_id=inbox.id,
                thread_id=mid,
                received_at=now_ms(),
                ingest_key=f"test:{mid}",
                sender=Address("carol@elsewhere.example", "Carol"),
                to=(Address(user.email, ""),),
                cc=(),
                bcc=(),
                subject=f"bulk {n}",
                snippet="",
                message_id_header=f"<{mid}@elsewhere.example>",
                in_reply_to=None,
                references=(),
                raw_hash="0" * 64,
                raw_size=100,
                body_hash=None,
                html_hash=None,
            )
        )
    await mailbox.store_messages(messages)
