"""Chaos on one data directory (issue 14): each role its own ``mailfleet
serve --roles ROLE`` process over the same storage (the embedded profile's
SQLite and files, or the distributed profile's PostgreSQL, NATS, Redis and
S3), SMTP clients sending while a loop SIGKILLs a random role and starts it
again every second or two; the end state is checked by ``harness.verify``.
The same on the local fleet, through HAProxy: ``tests/fleet/test_chaos.py``;
longer runs: ``bench/chaos.py``."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.chaos import harness
from tests.fleet.acceptance import FLEET_ENV
from tests.support.profile import Profile, config_args
from tests.test_restart import MAILFLEET, free_port, run_cli

LOAD = harness.Load.from_env(seconds=10)
KILL_EVERY = (0.8, 1.6)
VICTIMS = ("smtp-in", "worker-in", "api", "realtime", "worker-out")
# A mail a killed worker-in held comes back after this (the default is 30 s).
LEASE_SECONDS = 2


class RoleProcesses:
    """One ``mailfleet serve`` process per role, on fixed ports so that a
    restarted role is found where it was."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.ports = {"api": free_port(), "realtime": free_port(), "smtp-in": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            **FLEET_ENV,
            "MAILFLEET_STORAGE__INCOMING_LEASE_SECONDS": str(LEASE_SECONDS),
        }

    def command(self, role: str) -> list[str]:
        http = self.ports.get(role) if role in ("api", "realtime") else 0
        smtp = self.ports["smtp-in"] if role == "smtp-in" else 0
        return [
            *MAILFLEET, "serve", "--roles", role, "--data-dir", str(self.data_dir),
            *config_args(self.data_dir), "--http", f"127.0.0.1:{http}",
            "--smtp", f"127.0.0.1:{smtp}", "--submission", "127.0.0.1:0",
        ]  # fmt: skip

    def start(self, role: str) -> None:
        with open(self.log_dir / f"{role}.log", "ab") as log:
            self.procs[role] = subprocess.Popen(
                self.command(role), stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def kill(self, role: str) -> None:
        process = self.procs[role]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.procs.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def log(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready in {timeout} s"
        time.sleep(0.1)


def queue_depth(data_dir: Path, queue: str) -> int:
    listed = run_cli(data_dir, "queue", "list", queue)
    assert listed.returncode == 0, listed.stderr
    # "incoming: 0 items, oldest 0 s"
    return int(listed.stdout.split(":", 1)[1].split()[0])


@pytest.mark.timeout(LOAD.timeout)
async def test_acknowledged_mail_survives_killed_roles(tmp_path: Path, profile: Profile) -> None:
    data_dir = tmp_path / "data"
    profile.storage(data_dir)
    assert run_cli(data_dir, "domain", "add", "example.com", "--open-signup").returncode == 0
    (tmp_path / "logs").mkdir()
    roles = RoleProcesses(data_dir, tmp_path / "logs")
    rng = random.Random(os.environ.get("CHAOS_SEED", "14"))
    run = harness.new_run()
    api = f"http://127.0.0.1:{roles.ports['api']}"
    try:
        for role in VICTIMS:
            roles.start(role)
        await asyncio.to_thread(wait_ready, f"{api}/readyz")
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            accounts = [
                await harness.sign_up(client, f"c{run}x{i}@example.com")
                for i in range(LOAD.accounts)
            ]

            async def kill(role: str) -> None:
                await asyncio.to_thread(roles.kill, role)

            async def start(role: str) -> None:
                roles.start(role)

            chaos = await harness.send_under_chaos(
                client, accounts, roles.ports["smtp-in"], run, LOAD, VICTIMS, kill, start,
                KILL_EVERY, rng,
            )  # fmt: skip
            outcomes, kills = chaos.outcomes, chaos.kills
            print(f"chaos: {chaos.line()}")
            assert {name for _, name in kills} == set(VICTIMS), kills
            assert len(outcomes.accepted) >= LOAD.mails // 2, outcomes.line()

            await harness.wait_ready(client)
            expected = Counter(n % LOAD.accounts for n in outcomes.accepted)
            await harness.wait_until_delivered(
                client, accounts, expected, timeout=LOAD.settle_seconds
            )
            deadline = time.monotonic() + LOAD.settle_seconds / 2
            while await asyncio.to_thread(queue_depth, data_dir, "incoming"):
                assert time.monotonic() < deadline, "incoming did not drain"
                await asyncio.sleep(0.5)
            await harness.verify(client, run, accounts, outcomes)
            assert await asyncio.to_thread(queue_depth, data_dir, "error") == 0

            # Realtime is back too: a long poll answers.
            realtime = f"http://127.0.0.1:{roles.ports['realtime']}"
            await asyncio.to_thread(wait_ready, f"{realtime}/healthz")
            poll = await client.get(
                f"{realtime}/v1/events", params={"timeout": 0}, headers=accounts[0].auth
            )
            assert poll.status_code == 200, poll.text
    except BaseException:
        print(roles.log())
        raise
    finally:
        roles.stop_all()


pytestmark = pytest.mark.chaos
