"""A client that reconnects with its last cursor, over either transport,
misses nothing and sees nothing twice, while changes keep committing."""

from __future__ import annotations

import asyncio
import json
from itertools import cycle
from typing import Any

from websockets.asyncio.client import connect

from ..conftest import Service, User
from .conftest import churn, head, poll, socket, ws_url

CHANGES = 60


async def _some_events(ws: Any, most: int) -> list[dict[str, Any]]:
    """Up to ``most`` events, fewer when none comes for a while."""
    events: list[dict[str, Any]] = []
    while len(events) < most:
        try:
            async with asyncio.timeout(0.2):
                events.append(json.loads(await ws.recv()))
        except TimeoutError:
            break
    return events


async def test_reconnecting_switching_transports_loses_and_repeats_nothing(
    alice: User, bob: User, service: Service
) -> None:
    await bob.send(to=[alice.email])
    (message,) = await alice.messages("inbox")
    start = await head(alice)

    # Five changes each time the client starts over, written while it
    # connects and reads: every transport gets some, and the races are real.
    step = asyncio.Event()

    async def writer() -> None:
        for _ in range(CHANGES // 5):
            await step.wait()
            step.clear()
            await churn(service, alice, message["id"], 5)

    writing = asyncio.ensure_future(writer())
    seen: list[dict[str, Any]] = []
    by_transport: dict[str, int] = {}
    cursor = start
    transports = cycle(["ws-frame", "long-poll", "ws-query"])
    async with asyncio.timeout(15):
        while len(seen) < CHANGES:
            transport = next(transports)
            step.set()
            if transport == "ws-frame":
                async with socket(service, alice, cursor=cursor) as ws:
                    got = await _some_events(ws, 7)
            elif transport == "ws-query":
                url = ws_url(service, token=alice.token, cursor=cursor)
                async with connect(url, proxy=None) as ws:
                    got = await _some_events(ws, 5)
            else:
                got = (await poll(alice, cursor, timeout=1))["events"]
            seen += got
            by_transport[transport] = by_transport.get(transport, 0) + len(got)
            if got:
                cursor = got[-1]["cursor"]
    await writing

    assert all(by_transport.values()) and len(by_transport) == 3, by_transport
    assert [e["cursor"] for e in seen] == [str(int(start) + n) for n in range(1, CHANGES + 1)]
    assert {e["type"] for e in seen} == {"message.updated"}
    assert [e["data"]["is_flagged"] for e in seen] == [n % 2 == 0 for n in range(CHANGES)]
    assert await poll(alice, cursor) == {"events": [], "cursor": cursor}
