"""The realtime role in a process of its own (``mailfleet serve --roles
realtime``) pushes mail that worker-in stored in another process, and closes
a socket whose session the API process ended."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest
from websockets.asyncio.client import connect

from mailfleet.delivery.incoming_process import WorkerInProcess
from tests.support.profile import config_args

from ..conftest import DOMAIN, Service, StartService
from .conftest import receive, receive_until_closed


@pytest.fixture
async def realtime_process(start_service: StartService) -> AsyncIterator[tuple[Service, str]]:
    """The API and MX in this process, worker-in in its child, and the
    realtime role alone in a third process on the same data directory."""
    service = await start_service(roles=("api", "smtp-in"))
    worker = WorkerInProcess(service.runtime.settings)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MAILFLEET_REALTIME__AUTH_CHECK_SECONDS": "0.3",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailfleet",
        "--data-dir",
        str(service.runtime.settings.data_dir),
        *config_args(service.runtime.settings.data_dir),
        "serve",
        "--roles",
        "realtime",
        "--http",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    starting = asyncio.ensure_future(worker.start())  # both processes start at once
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            while not (
                match := re.search(rb"HTTP API on (http://\S+)", await process.stdout.readline())
            ):
                assert process.returncode is None
            await starting
        yield service, match.group(1).decode()
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.gather(process.wait(), starting, return_exceptions=True)
        await worker.stop()


async def test_mail_from_smtp_reaches_a_socket_of_another_process(
    realtime_process: tuple[Service, str],
) -> None:
    service, realtime_url = realtime_process
    alice = await service.user("alice")
    async with httpx.AsyncClient(base_url=realtime_url) as realtime:
        # The realtime role alone serves health and events, not the API.
        assert (await realtime.get("/healthz")).status_code == 200
        assert (
            await realtime.get("/v1/me", headers={"Authorization": f"Bearer {alice.token}"})
        ).status_code == 404
        answer = await realtime.get(
            "/v1/events", params={"timeout": 0}, headers={"Authorization": f"Bearer {alice.token}"}
        )
        assert answer.status_code == 200, answer.text
        start = answer.json()["cursor"]

    url = realtime_url.replace("http://", "ws://") + "/v1/events/ws"
    async with connect(url, proxy=None) as ws:
        await ws.send(json.dumps({"token": alice.token, "cursor": start}))
        began = time.monotonic()
        await aiosmtplib.send(
            b"From: bob@elsewhere.example\r\nTo: alice@" + DOMAIN.encode() + b"\r\n"
            b"Subject: pushed\r\nMessage-ID: <p1@elsewhere.example>\r\n\r\nhi\r\n",
            sender="bob@elsewhere.example",
            recipients=[alice.email],
            hostname="127.0.0.1",
            port=service.smtp_port,
            start_tls=False,
        )
        new, counts = await receive(ws, 2, timeout=10)
        assert time.monotonic() - began < 8  # pushed across processes (load permitting)
        (message,) = await alice.messages("inbox")
        assert new == {
            "type": "message.new",
            "cursor": str(int(start) + 1),
            "data": {
                "id": message["id"],
                "folder_id": message["folder_id"],
                "thread_id": message["thread_id"],
                "is_read": False,
                "is_flagged": False,
            },
        }
        assert counts["type"] == "folder.updated" and counts["data"]["unread"] == 1

        # A logout in the API process closes the socket in the realtime one.
        began = time.monotonic()
        assert (await alice.client.delete("/v1/sessions/current")).status_code == 204
        assert await receive_until_closed(ws, timeout=5) == []
        assert ws.close_code == 4401
        assert time.monotonic() - began < 5
