"""A client too slow to read its socket gets ``reset`` and is closed; the
server keeps nothing for it meanwhile (its backlog stays in the change log)."""

from __future__ import annotations

import asyncio
import json
import socket as sockets
import time

from websockets.asyncio.client import connect

from ..conftest import Service, StartService
from .conftest import REALTIME, poll, receive, receive_until_closed, socket, store_mail, ws_url

CHANGES = 4000  # about 750 KB of events, more than twice what the socket buffers hold


async def test_a_client_that_stops_reading_gets_reset_then_is_closed(
    start_service: StartService,
) -> None:
    service: Service = await start_service(
        {"realtime": {**REALTIME, "send_timeout_seconds": 0.3, "heartbeat_timeout_seconds": 10}}
    )
    # A small kernel send buffer (the server's sockets inherit the listener's):
    # about 1,500 events fill the buffers on the way, not tens of thousands.
    assert service.server.http_socket is not None
    service.server.http_socket.setsockopt(sockets.SOL_SOCKET, sockets.SO_SNDBUF, 8192)
    alice = await service.user("alice")
    start = (await poll(alice, None))["cursor"]

    # The slow client's kernel buffer is small too: left to autotuning, a
    # loopback receive buffer can grow to hold all 4,000 events, and then
    # nothing is ever too slow.
    raw = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 8192)
    raw.setblocking(False)
    host, port = service.server.http_address
    await asyncio.get_running_loop().sock_connect(raw, (host, port))
    async with connect(
        ws_url(service), proxy=None, max_queue=1, ping_interval=None, sock=raw
    ) as slow:
        await slow.send(json.dumps({"token": alice.token, "cursor": start}))
        async with socket(service, alice, cursor=start) as reader:
            await store_mail(service, alice, CHANGES)
            head = str(int(start) + CHANGES + 1)
            # A client that reads keeps up with all of it.
            events = await receive(reader, CHANGES + 1, timeout=10)
            assert [e["cursor"] for e in events][-1] == head
            # The slow one's send timed out meanwhile; it reads again only now.
            await asyncio.sleep(0.2)
            began = time.monotonic()
            got = await receive_until_closed(slow, timeout=10)
            assert time.monotonic() - began < 8  # closed, not left open (load permitting)

        *delivered, reset = got
        assert reset == {"type": "reset", "cursor": head}
        # What it was given is the log in order, then nothing more was kept for it.
        assert [e["cursor"] for e in delivered] == [
            str(int(start) + n) for n in range(1, len(delivered) + 1)
        ]
        assert len(delivered) < CHANGES / 2, len(delivered)
        assert slow.close_code == 4429
        assert "too slow" in (slow.close_reason or "")

    # It comes back from the reset's cursor and is followed as usual.
    async with socket(service, alice, cursor=head) as again:
        await store_mail(service, alice, 1)
        assert [e["cursor"] for e in await receive(again, 2)] == [
            str(int(head) + 1),
            str(int(head) + 2),
        ]
