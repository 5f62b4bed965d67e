"""A stand-in for the realtime endpoints (API.md "Realtime") while branch
``realtime`` is not merged: the same wire contract, read from the change log
by polling it. Used by the webmail tests only when the app has no
``/v1/events`` route of its own; it is test support, never shipped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.runtime import Runtime
from mailfleet.storage.interfaces import Change

router = APIRouter()
_TICK = 0.05


def _event(change: Change) -> dict[str, Any]:
    return {"type": change.kind, "cursor": str(change.seq), "data": change.data}


async def _after(runtime: Runtime, account_id: int, cursor: str | None) -> tuple[list[Any], str]:
    store = runtime.stores.mailbox
    if cursor is None:
        head = (await store.changes(account_id, after=0, limit=1)).head
        return [], str(head)
    page = await store.changes(account_id, after=int(cursor), limit=500)
    if page.reset:
        return [{"type": "reset", "cursor": str(page.head)}], str(page.head)
    events = [_event(c) for c in page.changes]
    return events, (events[-1]["cursor"] if events else cursor)


@router.get("/v1/events")
async def long_poll(
    request: Request,
    runtime: RuntimeDep,
    account: AccountDep,
    cursor: str | None = None,
    timeout: float = 25,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, 60)
    while True:
        events, head = await _after(runtime, account.id, cursor)
        if events or cursor is None or loop.time() >= deadline or await request.is_disconnected():
            return {"events": events, "cursor": head}
        await asyncio.sleep(_TICK)


@router.websocket("/v1/events/ws")
async def socket(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    try:
        hello = json.loads(await websocket.receive_text())
        account = await runtime.accounts.authenticate(hello["token"])
        cursor = hello.get("cursor")
        _, head = await _after(runtime, account.id, None)
        cursor = cursor if cursor is not None else head
        while True:
            events, cursor = await _after(runtime, account.id, cursor)
            for event in events:
                await websocket.send_text(json.dumps(event))
            if not events:
                try:
                    message = await asyncio.wait_for(websocket.receive(), _TICK)
                except TimeoutError:
                    continue
                if message["type"] == "websocket.disconnect":
                    return
    except (WebSocketDisconnect, RuntimeError):
        return
