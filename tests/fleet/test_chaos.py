"""Issue 14 on the local fleet, through HAProxy:

- chaos: SMTP clients send while a loop SIGKILLs a random role process
  (either ``smtp-in``, either ``worker-in``, either ``api``, ``worker-out``,
  ``realtime``) and starts it again; the end state is ``harness.verify``'s;
- node loss under load: one NATS node of three, or Redis, is SIGKILLed while
  mail flows and started again later; mails keep being accepted (NATS keeps
  its quorum; without Redis the service is slower, never stopped), none is
  lost, and the time from the node's return to a new mail being delivered is
  measured and bounded.

The same chaos on one data directory: ``tests/chaos/test_chaos.py``."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from mailfleet.localfleet import DOMAIN, Fleet, FleetState
from tests.chaos import harness
from tests.fleet.acceptance import http_url

pytestmark = [pytest.mark.fleet, pytest.mark.chaos]

LOAD = harness.Load.from_env(seconds=15)
VICTIMS = (
    "smtp-in-1", "smtp-in-2", "worker-in-1", "worker-in-2", "api-1", "api-2",
    "worker-out-1", "realtime-1",
)  # fmt: skip
RECOVERY_SECONDS = 10


def queue_listing(fleet: Fleet, queue: str) -> tuple[int, str]:
    """``mailfleet queue list QUEUE`` on the fleet: its depth, and the listing
    (which says why each item in ``error`` is there)."""
    listed = subprocess.run(
        [sys.executable, "-m", "mailfleet", "--config", str(fleet.config_path), "queue", "list",
         queue],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return int(listed.stdout.split(":", 1)[1].split()[0]), listed.stdout


def queue_depth(fleet: Fleet, queue: str) -> int:
    return queue_listing(fleet, queue)[0]


async def settle_and_verify(
    fleet: Fleet,
    client: httpx.AsyncClient,
    run: str,
    accounts: list[harness.Account],
    outcomes: harness.Outcomes,
) -> None:
    await harness.wait_ready(client)
    expected = Counter(n % len(accounts) for n in outcomes.accepted)
    await harness.wait_until_delivered(client, accounts, expected, timeout=LOAD.settle_seconds)
    deadline = time.monotonic() + LOAD.settle_seconds / 2
    while await asyncio.to_thread(queue_depth, fleet, "incoming"):
        assert time.monotonic() < deadline, "incoming did not drain"
        await asyncio.sleep(0.5)
    await harness.verify(client, run, accounts, outcomes)
    depth, listing = await asyncio.to_thread(queue_listing, fleet, "error")
    assert depth == 0, listing


async def sign_up_all(client: httpx.AsyncClient, run: str, count: int) -> list[harness.Account]:
    return [await harness.sign_up(client, f"k{run}x{i}@{DOMAIN}") for i in range(count)]


@pytest.mark.timeout(LOAD.timeout)
async def test_acknowledged_mail_survives_killed_roles_on_the_fleet(
    fleet: tuple[Fleet, FleetState],
) -> None:
    running, state = fleet
    rng = random.Random(os.environ.get("CHAOS_SEED", "14"))
    run = harness.new_run()
    async with httpx.AsyncClient(base_url=http_url(state), timeout=30) as client:
        accounts = await sign_up_all(client, run, LOAD.accounts)

        async def kill(name: str) -> None:
            await asyncio.to_thread(running.kill_process, name)

        async def start(name: str) -> None:
            await asyncio.to_thread(running.restart_process, name, False)

        try:
            chaos = await harness.send_under_chaos(
                client, accounts, state.ports["smtp"], run, LOAD, VICTIMS, kill, start,
                (1.0, 2.0), rng,
            )  # fmt: skip
        finally:
            for name in VICTIMS:  # every role serves again, waited for
                await asyncio.to_thread(running.restart_process, name)
        outcomes, kills = chaos.outcomes, chaos.kills
        print(f"fleet chaos: {chaos.line()}")
        assert {name for _, name in kills} == set(VICTIMS), kills
        assert len(outcomes.accepted) >= LOAD.mails // 2, outcomes.line()
        await settle_and_verify(running, client, run, accounts, outcomes)


async def _delivered_after(
    client: httpx.AsyncClient, state: FleetState, account: harness.Account, run: str
) -> float:
    """Sends one more mail to ``account`` and returns the seconds until it is
    listed in the Inbox."""
    began = time.monotonic()
    outcomes = await harness.send_mails(state.ports["smtp"], run, [account.email], 1, 1)
    assert outcomes.accepted == {0}, outcomes.line()
    while True:
        items = await harness.inbox_listing(client, account)
        if any(i["subject"] == f"chaos {run} 0" for i in items):
            return time.monotonic() - began
        assert time.monotonic() - began < 60, "the probe mail was not delivered"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("node", ["nats-n1", "redis"])
async def test_a_lost_node_loses_no_mail_and_the_fleet_recovers(
    fleet: tuple[Fleet, FleetState], node: str
) -> None:
    running, state = fleet
    run = harness.new_run()
    mails = 200
    async with httpx.AsyncClient(base_url=http_url(state), timeout=30) as client:
        accounts = await sign_up_all(client, run, 10)
        sending = asyncio.create_task(
            harness.send_mails(
                state.ports["smtp"], run, [a.email for a in accounts], mails, 4, pace=4 * 8 / mails
            )
        )
        await asyncio.sleep(2)
        down_at = time.monotonic()
        await asyncio.to_thread(running.kill_process, node)
        await asyncio.sleep(3)
        await asyncio.to_thread(running.restart_process, node)
        back_at = time.monotonic()
        # A mail sent as the node is back is delivered within the bound.
        recovery = await _delivered_after(client, state, accounts[0], harness.new_run())
        outcomes = await sending
        print(
            f"{node} down {back_at - down_at:.1f} s: {outcomes.line()};"
            f" a new mail delivered {recovery:.2f} s after the node's return"
        )
        assert recovery < RECOVERY_SECONDS, recovery
        # The service went on while the node was down: most mails were taken.
        assert len(outcomes.accepted) >= mails * 3 // 4, outcomes.line()
        await settle_and_verify(running, client, run, accounts, outcomes)
