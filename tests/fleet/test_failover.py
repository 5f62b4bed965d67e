"""Issue 14, node loss on the local fleet: shard2's PostgreSQL primary is
killed (SIGKILL of its postmaster) while mail flows to accounts on it and
their readers mark mail read, and its streaming standby is promoted (by the
operator: ``Fleet.promote``; nothing promotes on its own). Replication is
synchronous (``synchronous_standby_names``), so every commit acknowledged
before the crash is on the standby: no mail answered 250 is lost, no PATCH
answered 200 is undone. The roles find the new primary through the shard's
multi-host URL (``target_session_attrs=read-write``), by themselves.

At the end the old primary is rebuilt as the new one's standby and the two
are switched back (a planned switchover), so the fleet is as it was for the
tests after this one."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from mailfleet.localfleet import DOMAIN, Fleet, FleetState
from tests.chaos import harness
from tests.fleet.acceptance import http_url
from tests.fleet.test_chaos import settle_and_verify

pytestmark = [pytest.mark.fleet, pytest.mark.chaos]

RECOVERY_SECONDS = 10


async def on_shard2(
    fleet: Fleet, state: FleetState, client: httpx.AsyncClient, run: str, want: int
) -> list[harness.Account]:
    """``want`` new accounts that the directory placed on shard2 (placement
    goes to the least-loaded shard: about every other one)."""
    accounts: list[harness.Account] = []
    i = 0
    while len(accounts) < want:
        account = await harness.sign_up(client, f"f{run}x{i}@{DOMAIN}")
        i += 1
        shard = fleet.sql(
            state,
            "directory",
            "SELECT p.shard FROM placements p JOIN accounts a ON a.id = p.account_id"
            f" WHERE a.email = '{account.email}'",
        )
        if shard == "shard2":
            accounts.append(account)
        assert i < want * 6, "the directory places no new account on shard2"
    return accounts


async def mark_read(client: httpx.AsyncClient, accounts: list[harness.Account]) -> set[str]:
    """Marks every unread Inbox message of ``accounts`` read; returns the ids
    answered 200 (others failed while the primary was gone)."""
    marked: set[str] = set()
    for account in accounts:
        try:
            for item in await harness.inbox_listing(client, account):
                if item["is_read"]:
                    continue
                answer = await client.patch(
                    f"/v1/messages/{item['id']}", json={"is_read": True}, headers=account.auth
                )
                if answer.status_code == 200:
                    marked.add(item["id"])
        except (httpx.HTTPError, AssertionError):
            pass  # a listing answered 503: try the next account
    return marked


async def ids_of(client: httpx.AsyncClient, account: harness.Account) -> set[str]:
    return {item["id"] for item in await harness.inbox_listing(client, account)}


async def writes_answer(client: httpx.AsyncClient, run: str, timeout: float = 20) -> None:
    """Until a sign-up (a write on the directory and a shard) succeeds: the
    roles' pools have replaced the connections a switch broke."""
    deadline = time.monotonic() + timeout
    for i in range(1000):
        answer = await client.post(
            "/v1/accounts", json={"email": f"w{run}x{i}@{DOMAIN}", "password": harness.PASSWORD}
        )
        if answer.status_code == 201:
            return
        assert time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_primary_lost_and_standby_promoted_loses_nothing(
    fleet: tuple[Fleet, FleetState],
) -> None:
    running, state = fleet
    run = harness.new_run()
    mails = 300
    async with httpx.AsyncClient(base_url=http_url(state), timeout=30) as client:
        accounts = await on_shard2(running, state, client, run, 6)
        sending = asyncio.create_task(
            harness.send_mails(
                state.ports["smtp"], run, [a.email for a in accounts], mails, 4, pace=4 * 10 / mails
            )
        )
        await asyncio.sleep(2)
        marked = await mark_read(client, accounts)  # acknowledged before the crash
        owners = {a.email: await ids_of(client, a) for a in accounts}
        assert marked, "nothing was delivered and marked before the crash"
        before_crash = len(marked)
        await asyncio.to_thread(running.kill_postgres, "shard2")
        down_at = time.monotonic()
        marked |= await mark_read(client, accounts)  # mostly 503s: no primary
        await asyncio.sleep(max(0.0, 1 - (time.monotonic() - down_at)))
        await asyncio.to_thread(running.promote, "shard2-replica")
        promoted_at = time.monotonic()
        # Writes go on by themselves: a PATCH answers 200 again.
        probe = next(iter(marked))
        owner = next(a for a in accounts if probe in owners[a.email])
        while (
            await client.patch(
                f"/v1/messages/{probe}", json={"is_flagged": True}, headers=owner.auth
            )
        ).status_code != 200:
            assert time.monotonic() - promoted_at < RECOVERY_SECONDS, "no write after promotion"
            await asyncio.sleep(0.1)
        writes_back = time.monotonic() - promoted_at
        outcomes = await sending
        marked |= await mark_read(client, accounts)
        print(
            f"shard2 primary killed, standby promoted after {promoted_at - down_at:.1f} s:"
            f" {outcomes.line()}; writes answered again {writes_back:.2f} s after promotion;"
            f" {len(marked)} PATCHes acknowledged ({before_crash} before the crash)"
        )
        assert writes_back < RECOVERY_SECONDS
        await settle_and_verify(running, client, run, accounts, outcomes)
        # Every acknowledged PATCH is still there on the promoted server.
        for account in accounts:
            for item in await harness.inbox_listing(client, account):
                if item["id"] in marked:
                    assert item["is_read"], item

    # Back as it was: the old primary follows the new one, then they swap.
    await asyncio.to_thread(running.rebuild_standby, "shard2", "shard2-replica")
    await asyncio.to_thread(running.switch_over, "shard2-replica", "shard2")
    assert running.sql(state, "shard2", "SELECT pg_is_in_recovery()") == "f"
    assert running.sql(state, "shard2-replica", "SELECT pg_is_in_recovery()") == "t"
    async with httpx.AsyncClient(base_url=http_url(state), timeout=30) as client:
        await writes_answer(client, run)
