"""Everything acknowledged survives the process being killed (SIGKILL, no
clean shutdown) and started again on the same data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import PASSWORD
from tests.support.profile import Profile, config_args

MAILFLEET = [sys.executable, "-m", "mailfleet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(data_dir: Path, args: tuple[str, ...]) -> list[str]:
    # A test that brings its own configuration puts the storage in it.
    return [] if "--config" in args else config_args(data_dir)


def run_cli(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILFLEET, "--data-dir", str(data_dir), *_config(data_dir, args), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def serve_command(data_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        *MAILFLEET,
        "serve",
        *extra,
        "--data-dir",
        str(data_dir),
        *_config(data_dir, extra),
        "--http",
        f"127.0.0.1:{port}",
        "--smtp",
        f"127.0.0.1:{free_port()}",
        "--submission",
        f"127.0.0.1:{free_port()}",
    ]


# Without worker-out: the remote mail these tests queue stays queued.
NO_DELIVERY = ("--roles", "api,smtp-in,worker-in")


def start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """``mailfleet serve`` with ``extra`` arguments (default: no worker-out),
    once its API is ready."""
    log = data_dir.parent / "serve.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            serve_command(data_dir, port, *(extra or NO_DELIVERY)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not become ready in 30 s")


def test_acknowledged_data_survives_sigkill(tmp_path: Path, profile: Profile) -> None:
    data_dir = tmp_path / "data"
    profile.storage(data_dir)
    assert run_cli(data_dir, "domain", "add", "example.com", "--open-signup").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(data_dir, port)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for local in ("alice", "bob"):
                r = client.post(
                    "/v1/accounts",
                    json={"email": f"{local}@example.com", "password": PASSWORD, "name": local},
                )
                assert r.status_code == 201, r.text
            tokens = {
                local: client.post(
                    "/v1/sessions", json={"email": f"{local}@example.com", "password": PASSWORD}
                ).json()["token"]
                for local in ("alice", "bob")
            }
            alice = {"Authorization": f"Bearer {tokens['alice']}"}
            bob = {"Authorization": f"Bearer {tokens['bob']}"}
            upload = client.post(
                "/v1/attachments", headers=alice, files={"file": ("n.txt", b"notes", "text/plain")}
            ).json()
            sent = client.post(
                "/v1/messages",
                headers=alice,
                json={
                    "to": ["bob@example.com", "far@remote.example"],
                    "subject": "durable",
                    "body": "still here?",
                    "attachments": [upload["id"]],
                },
            )
            assert sent.status_code == 202
            folders = client.get("/v1/folders", headers=bob).json()
            inbox = next(f for f in folders if f["role"] == "inbox")
            (message,) = client.get(f"/v1/folders/{inbox['id']}/messages", headers=bob).json()[
                "items"
            ]
            flagged = client.patch(
                f"/v1/messages/{message['id']}", headers=bob, json={"is_flagged": True}
            )
            assert flagged.status_code == 200
            created = client.post("/v1/folders", headers=bob, json={"name": "Kept"})
            assert created.status_code == 201
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    process = start(data_dir, port)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            # Sessions survive too: the old tokens still work.
            folders = client.get("/v1/folders", headers=bob).json()
            assert "Kept" in [f["name"] for f in folders]
            inbox = next(f for f in folders if f["role"] == "inbox")
            assert (inbox["total"], inbox["unread"]) == (1, 1)
            (again,) = client.get(f"/v1/folders/{inbox['id']}/messages", headers=bob).json()[
                "items"
            ]
            assert again["id"] == message["id"]
            assert again["is_flagged"] is True
            full = client.get(f"/v1/messages/{message['id']}", headers=bob).json()
            assert full["body"] == "still here?"
            data = client.get(
                f"/v1/messages/{message['id']}/attachments/{full['attachments'][0]['id']}",
                headers=bob,
            )
            assert data.content == b"notes"
            own = client.get(f"/v1/messages/{sent.json()['id']}", headers=alice).json()
            assert {d["email"]: d["status"] for d in own["delivery"]} == {
                "bob@example.com": "delivered",
                "far@remote.example": "queued",
            }
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
    listing = run_cli(data_dir, "queue", "list", "outgoing")
    assert listing.returncode == 0, listing.stderr
    assert "remote.example" in listing.stdout
    assert "far@remote.example" in listing.stdout


def test_serve_demo_prints_working_logins(tmp_path: Path, profile: Profile) -> None:
    data_dir = tmp_path / "data"
    profile.storage(data_dir)
    port = free_port()
    process = subprocess.Popen(
        serve_command(data_dir, port, "--demo"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        logins = []
        while len(logins) < 2:
            line = process.stdout.readline()
            assert line, "serve --demo exited before printing its logins"
            if "demo login:" in line:
                words = line.split()
                logins.append((words[2], words[4]))
        for email, password in logins:
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/sessions",
                json={"email": email, "password": password},
                timeout=30,
            )
            assert r.status_code == 201, r.text
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()
