"""worker-out killed (SIGKILL) in the middle of a delivery, then started
again: the mail arrives, and no recipient whose server already said 250
gets it twice."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from tests.conftest import FAST_AUTH, PASSWORD
from tests.support.profile import Profile, storage_config
from tests.support.smtp_peer import SmtpPeer
from tests.test_restart import free_port, start

REMOTE = "remote.test"


def config(path: Path, peer_port: int, storage: str) -> Path:
    auth = "\n".join(f"{k} = {v}" for k, v in FAST_AUTH.items())
    path.write_text(
        storage
        + f"""
[smtp.routes]
"{REMOTE}" = "127.0.0.1:{peer_port}"

[delivery]
retry_schedule_seconds = [1, 2, 4]
time_scale = 0.2
jitter = 0
# A killed worker's item comes back after the lease.
lease_seconds = 4
attempt_timeout_seconds = 3

[auth]
{auth}

[[domains]]
name = "example.com"
open_signup = true
"""
    )
    return path


async def test_killed_mid_delivery_delivers_once_per_recipient(
    tmp_path: Path, profile: Profile
) -> None:
    # ok@ takes the mail on the first attempt; late@ is deferred once (451 at
    # RCPT), and on its retry the peer holds DATA while we kill the process.
    peer = await SmtpPeer(
        rcpt=lambda address, n: "451 4.2.0 busy" if address.startswith("late") and n == 1 else None
    ).start()
    release = asyncio.Event()
    peer.stall_data = release
    data_dir = tmp_path / "data"
    port = free_port()
    profile.storage(data_dir)
    storage = storage_config(data_dir).read_text() if profile.distributed else ""
    toml = config(tmp_path / "mailfleet.toml", peer.port, storage)
    args = ("--config", str(toml), "--roles", "api,worker-out")

    first_data = asyncio.Event()

    def data_reply(n: int) -> str | None:
        if n == 1:
            first_data.set()
        return None

    peer.data = data_reply
    # The first DATA (ok@ only) must not stall: stall from the second on.
    release.set()
    process = await asyncio.to_thread(start, data_dir, port, *args)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            account = {"email": "alice@example.com", "password": PASSWORD, "name": "Alice"}
            assert (await client.post("/v1/accounts", json=account)).status_code == 201
            login = await client.post(
                "/v1/sessions", json={"email": account["email"], "password": PASSWORD}
            )
            client.headers["Authorization"] = f"Bearer {login.json()['token']}"
            sent = await client.post(
                "/v1/messages",
                json={
                    "to": [f"ok@{REMOTE}", f"late@{REMOTE}"],
                    "subject": "exactly once",
                    "body": "hello",
                },
            )
            assert sent.status_code == 202, sent.text
            await asyncio.wait_for(first_data.wait(), 10)
            assert len(peer.accepted(f"ok@{REMOTE}")) == 1
            # Hold the retry for late@ in DATA, then kill the whole process.
            release.clear()
            peer.stalled.clear()
            await asyncio.wait_for(peer.stalled.wait(), 10)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    release.set()  # the peer finishes the DATA it held: its client is gone

    process = await asyncio.to_thread(start, data_dir, port, *args)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            login = await client.post(
                "/v1/sessions", json={"email": "alice@example.com", "password": PASSWORD}
            )
            client.headers["Authorization"] = f"Bearer {login.json()['token']}"
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                own = (await client.get(f"/v1/messages/{sent.json()['id']}")).json()
                statuses = {d["email"]: d["status"] for d in own["delivery"]}
                if statuses[f"late@{REMOTE}"] == "delivered":
                    break
                assert asyncio.get_running_loop().time() < deadline, statuses
                await asyncio.sleep(0.1)
        assert statuses == {f"ok@{REMOTE}": "delivered", f"late@{REMOTE}": "delivered"}
        await asyncio.sleep(0.5)  # nothing more arrives
        assert len(peer.accepted(f"ok@{REMOTE}")) == 1
        assert len(peer.accepted(f"late@{REMOTE}")) == 1
        assert peer.data_count == 3  # ok@; late@ held and lost; late@ again
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)
        await peer.stop()
