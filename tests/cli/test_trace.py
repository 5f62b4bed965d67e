"""Structured logs and ``mailfleet trace`` (issue 15, decision 0029), on real
``mailfleet serve`` processes writing JSON logs to files: a mail received
over SMTP (smtp-in and worker-in in two processes, two log files), and a
mail sent through ``POST /v1/messages`` to a remote MX (a real SMTP peer on
loopback), each traced by every id an operator may hold."""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mailfleet.cli.trace import find_hops, log_files
from mailfleet.config import load_settings
from mailfleet.errors import NotFound
from tests.conftest import PASSWORD
from tests.support.profile import Profile, config_args
from tests.support.smtp_peer import SmtpPeer
from tests.test_restart import MAILFLEET, free_port, run_cli

DOMAIN = "example.com"
REMOTE = "remote.test"


class Role:
    """One ``mailfleet serve --roles ...`` process, its JSON log in a file of
    its own, ready once its /readyz says so (HTTP or operations port)."""

    def __init__(self, data_dir: Path, roles: str, config: str) -> None:
        self.http = free_port()
        self.smtp = free_port()
        self.log = data_dir.parent / "logs" / f"{roles.replace(',', '+')}.log"
        ready_port = self.http if "api" in roles else free_port()
        command = [
            *MAILFLEET,
            "serve",
            "--roles",
            roles,
            "--data-dir",
            str(data_dir),
            *self._config(data_dir, roles, config),
            "--http",
            f"127.0.0.1:{self.http}",
            "--smtp",
            f"127.0.0.1:{self.smtp}",
            "--submission",
            f"127.0.0.1:{free_port()}",
        ]
        environment = {
            **os.environ,
            "MAILFLEET_LOGGING__FILE": str(self.log),
            "MAILFLEET_LOGGING__FORMAT": "json",
            "MAILFLEET_METRICS__LISTEN": "" if "api" in roles else f"127.0.0.1:{ready_port}",
        }
        self.output = data_dir.parent / f"{roles}.out"
        with open(self.output, "ab") as output:
            self.process = subprocess.Popen(
                command, env=environment, stdout=output, stderr=subprocess.STDOUT
            )
        self.ready_url = f"http://127.0.0.1:{ready_port}/readyz"

    @staticmethod
    def _config(data_dir: Path, roles: str, extra: str) -> list[str]:
        """The profile's storage configuration, plus ``extra`` TOML."""
        if not extra:
            return config_args(data_dir)
        storage = config_args(data_dir)
        text = Path(storage[1]).read_text() if storage else ""
        path = data_dir.parent / f"{roles.replace(',', '+')}.toml"
        path.write_text(text + "\n" + extra)
        return ["--config", str(path)]

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.output.read_text()
                try:
                    if (await client.get(self.ready_url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready in 30 s: {self.output.read_text()}")

    def stop(self) -> None:
        # Nothing of it is needed after the test (worker-in's child, if any,
        # leaves when its parent's pipe closes).
        self.process.kill()
        self.process.wait()


@pytest.fixture
async def spawn(tmp_path: Path, profile: Profile) -> AsyncIterator[Callable[..., Any]]:
    data_dir = tmp_path / "data"
    profile.storage(data_dir)
    added = await asyncio.to_thread(run_cli, data_dir, "domain", "add", DOMAIN, "--open-signup")
    assert added.returncode == 0, added.stderr
    started: list[Role] = []

    async def start(roles: str, config: str = "") -> Role:
        role = Role(data_dir, roles, config)
        started.append(role)
        await role.ready()
        return role

    yield start
    for role in started:
        role.stop()


def records(log: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log, parsed: each must be one object."""
    out = []
    for line in log.read_bytes().splitlines():
        record = orjson.loads(line)
        assert isinstance(record, dict), line
        assert {"timestamp", "level", "logger", "event"} <= record.keys(), record
        out.append(record)
    return out


async def logged(logs: list[Path], event: str, **fields: Any) -> dict[str, Any]:
    """The first record of ``event`` with ``fields``, once some process wrote it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for log in logs:
            if log.exists():
                for record in records(log):
                    if record["event"] == event and fields.items() <= record.items():
                        return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} {fields} in {[str(p) for p in logs]}")


def trace(data_dir: Path, ident: str, *logs: str) -> subprocess.CompletedProcess[str]:
    args = [arg for log in logs for arg in ("--logs", log)]
    return run_cli(data_dir, "trace", ident, *args, "--width", "250")


def hops_in_order(screen: str, *hops: str) -> None:
    at = [screen.index(f"│ {hop} ") for hop in hops]
    assert at == sorted(at), (hops, screen)


async def account(base: str, local: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        email = f"{local}@{DOMAIN}"
        made = await client.post("/v1/accounts", json={"email": email, "password": PASSWORD})
        assert made.status_code == 201, made.text
        login = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        return {"Authorization": f"Bearer {login.json()['token']}"}


async def receive_over_smtp(
    spawn: Callable[..., Any], tmp_path: Path, message_id: str
) -> tuple[str, Path]:
    """smtp-in (with api) and worker-in in two processes, a log each; one mail
    over SMTP. Returns the queue id smtp-in answered with, and the logs' dir."""
    front, _ = await asyncio.gather(spawn("api,smtp-in"), spawn("worker-in"))
    await account(f"http://127.0.0.1:{front.http}", "bob")
    with smtplib.SMTP("127.0.0.1", front.smtp, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("carol@outside.example")
        client.rcpt(f"bob@{DOMAIN}")
        code, reply = client.data(
            f"From: carol@outside.example\r\nTo: bob@{DOMAIN}\r\nSubject: traced\r\n"
            f"Message-ID: {message_id}\r\n\r\nHello Bob.\r\n".encode()
        )
    assert code == 250, reply
    queue_id = reply.decode().rsplit(" ", 1)[1]
    logs = tmp_path / "logs"
    # Each process writes its lines a tenth of a second at a time: worker-in's
    # "stored" can be on disk before smtp-in's "received" is.
    for event in ("received", "queued", "stored"):
        await logged(sorted(logs.glob("*.log")), event, trace_id=queue_id)
    return queue_id, logs


async def test_trace_of_a_mail_received_over_smtp(
    spawn: Callable[..., Any], tmp_path: Path
) -> None:
    queue_id, logs = await receive_over_smtp(spawn, tmp_path, "<hello.1@outside.example>")
    data_dir = tmp_path / "data"
    pattern = str(logs / "*.log")

    # Every line of both processes' logs is a JSON object; the mail's
    # carry its id: smtp-in and the queue in one process, worker-in (its own
    # child process) in the other's file.
    front, worker = logs / "api+smtp-in.log", logs / "worker-in.log"
    received = next(r for r in records(front) if r["event"] == "received")
    assert received["trace_id"] == queue_id
    assert received["logger"] == "mailfleet.smtp_in"
    assert received["message_id_header"] == "<hello.1@outside.example>"
    assert received["client_ip"] == "127.0.0.1"
    assert received["mail_from"] == "carol@outside.example"
    assert received["rcpt"] == 1 and received["size"] > 0
    queued = next(r for r in records(front) if r["event"] == "queued")
    assert queued["trace_id"] == queue_id and queued["queue"] == "incoming"
    stored = next(r for r in records(worker) if r["event"] == "stored")
    assert stored["trace_id"] == queue_id and stored["folder"] == "inbox"

    shown = await asyncio.to_thread(trace, data_dir, "<hello.1@outside.example>", pattern)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    screen = shown.stdout
    assert f"trace {queue_id}" in screen, screen
    hops_in_order(screen, "received", "queued", "stored")
    assert "+0.000 s" in screen
    # Each hop says which process's log it came from.
    assert "api+smtp-in" in screen and "worker-in" in screen
    # The same hops by the Message-ID without brackets, the queue id of the
    # 250, the queue item's id, and the stored copy's message id (what the
    # command prints them from, without a process each).
    files = log_files([pattern], load_settings(None))
    for ident in ("hello.1@outside.example", queue_id, queued["item"], str(stored["message_id"])):
        found = find_hops(ident, files)
        assert list(found) == [queue_id], (ident, found)
        assert [r["event"] for _, r in found[queue_id]] == ["received", "queued", "stored"]

    missing = await asyncio.to_thread(trace, data_dir, "<nobody@nowhere.example>", pattern)
    assert missing.returncode == 1
    assert "no log line names '<nobody@nowhere.example>'" in missing.stderr
    with pytest.raises(NotFound, match="no log file at"):
        log_files([str(tmp_path / "none.log")], load_settings(None))

    # Without --logs: ``[logging] file`` (here from the environment).
    env = {**os.environ, "MAILFLEET_LOGGING__FILE": str(front)}
    shown = await asyncio.to_thread(
        subprocess.run,
        [*MAILFLEET, "--data-dir", str(data_dir), *config_args(data_dir), "trace", queue_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    hops_in_order(shown.stdout, "received", "queued")


async def test_trace_of_a_mail_sent_through_the_api_to_a_remote_mx(
    spawn: Callable[..., Any], tmp_path: Path
) -> None:
    peer = await SmtpPeer().start()
    try:
        server = await spawn(
            "api,smtp-in,worker-in,worker-out",
            f'[smtp.routes]\n"{REMOTE}" = "127.0.0.1:{peer.port}"\n'
            "[delivery]\nallow_private_destinations = true\n",
        )
        base = f"http://127.0.0.1:{server.http}"
        alice = await account(base, "alice")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            sent = await client.post(
                "/v1/messages",
                headers=alice,
                json={"to": [{"email": f"dave@{REMOTE}"}], "subject": "out", "body": "Hi Dave."},
            )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["id"]
        delivered = await logged([server.log], "delivered", message_id=int(message_id))
    finally:
        await peer.stop()
    assert peer.accepted(f"dave@{REMOTE}")
    assert delivered["remote"] == "127.0.0.1"
    assert delivered["reply"].startswith("250") and "OK queued" in delivered["reply"]
    assert delivered["attempt"] == 1 and delivered["recipient"] == f"dave@{REMOTE}"
    lines = records(server.log)
    api = next(r for r in lines if r["event"] == "sent")
    assert api["trace_id"] == delivered["trace_id"] and api["via"] == "api"
    queued = next(r for r in lines if r["event"] == "queued" and r["queue"] == "outgoing")
    assert queued["trace_id"] == delivered["trace_id"] and queued["domain"] == REMOTE

    # Beside other roles worker-in is a child process: it appends its lines
    # to the same file.
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=10) as client:
        client.sendmail("carol@outside.example", [f"alice@{DOMAIN}"], b"Subject: in\r\n\r\nHi\r\n")
    received = await logged([server.log], "received", mail_from="carol@outside.example")
    child = {"trace_id": received["trace_id"], "logger": "mailfleet.worker_in"}
    await logged([server.log], "stored", **child)

    data_dir = tmp_path / "data"
    shown = await asyncio.to_thread(trace, data_dir, message_id, str(server.log))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    screen = shown.stdout
    hops_in_order(screen, "sent", "queued", "delivered")
    assert "reply=250 2.0.0 OK queued" in screen, screen
    assert "remote=127.0.0.1" in screen
    # The same by the Message-ID, the queue item id and the trace id.
    for ident in (api["message_id_header"], queued["item"], api["trace_id"]):
        found = find_hops(ident, [server.log])
        assert list(found) == [api["trace_id"]], (ident, found)
        assert [r["event"] for _, r in found[api["trace_id"]]] == ["sent", "queued", "delivered"]
