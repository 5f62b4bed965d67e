"""Issue 12's fleet acceptance, as one function the test and
``bench/fleet_acceptance.py`` both run: sign up ``accounts`` accounts through
the balancer, send ``mails`` mails over SMTP through it, and check that each
is delivered exactly once (by Message-ID), searchable, and pushed live over a
WebSocket connected through the balancer."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import httpx
from websockets.asyncio.client import ClientConnection, connect

from mailfleet.localfleet import DOMAIN, Fleet, FleetState

PASSWORD = "correct horse battery"
# The fleet's processes inherit these (Fleet(env=...)): Argon2id at RFC 9106's
# cost makes a sign-up tens of ms of CPU, and every mail of the run comes from
# one client address.
FLEET_ENV = {
    "MAILFLEET_AUTH__ARGON2_TIME_COST": "1",
    "MAILFLEET_AUTH__ARGON2_MEMORY_KIB": "256",
    "MAILFLEET_AUTH__ARGON2_PARALLELISM": "1",
    "MAILFLEET_SMTP__MESSAGES_PER_MINUTE_PER_IP": "1000000",
    "MAILFLEET_SMTP__CONNECTIONS_PER_MINUTE_PER_IP": "1000000",
    "MAILFLEET_SMTP__MAX_CONNECTIONS_PER_IP": "1000",
    "MAILFLEET_LIMITS__SEND_PER_MINUTE": "100000",
    # A mail a killed worker-in held comes back after this (30 s by default):
    # the chaos and node-loss tests kill them.
    "MAILFLEET_STORAGE__INCOMING_LEASE_SECONDS": "5",
}


@dataclass
class Account:
    email: str
    token: str


@dataclass
class Figures:
    accounts: int
    mails: int
    connections: int
    signup_seconds: float = 0
    send_seconds: float = 0
    visible_seconds: float = 0
    pushed: int = 0
    push_expected: int = 0
    shards: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"accounts {self.accounts} (per shard: {self.shards}), signed up in"
            f" {self.signup_seconds:.1f} s",
            f"mails {self.mails} over {self.connections} SMTP connections through HAProxy:"
            f" accepted in {self.send_seconds:.1f} s ({self.mails / self.send_seconds:.0f}/s)",
            f"all delivered and listed {self.visible_seconds:.1f} s after the first was sent"
            f" ({self.mails / self.visible_seconds:.0f}/s)",
            f"pushed over WebSocket: {self.pushed} of {self.push_expected}",
        ]


def http_url(state: FleetState) -> str:
    return f"http://127.0.0.1:{state.ports['http']}"


async def sign_up(client: httpx.AsyncClient, email: str) -> Account:
    answer = await client.post(
        "/v1/accounts", json={"email": email, "password": PASSWORD, "name": email}
    )
    assert answer.status_code == 201, answer.text
    login = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert login.status_code == 201, login.text
    return Account(email, login.json()["token"])


async def inbox_items(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    """Every message of the account's Inbox, following the cursor."""
    auth = {"Authorization": f"Bearer {account.token}"}
    folders = await client.get("/v1/folders", headers=auth)
    assert folders.status_code == 200, folders.text
    inbox = next(f for f in folders.json() if f["role"] == "inbox")
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = await client.get(f"/v1/folders/{inbox['id']}/messages", params=params, headers=auth)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return items


def mail(run: str, number: int, to: str) -> bytes:
    return (
        f"From: Sender <sender@outside.example>\r\nTo: {to}\r\n"
        f"Subject: fleet {run} mail {number}\r\n"
        f"Message-ID: <{run}.{number}@outside.example>\r\n\r\n"
        f"Body of mail {number}: marker{run} word{run}n{number}\r\n"
    ).encode()


async def send_all(
    port: int, run: str, recipients: list[str], mails: int, connections: int
) -> None:
    """``mails`` mails over ``connections`` sessions through the balancer; the
    i-th mail goes to ``recipients[i % len]``. Each must be answered 250."""
    numbers = list(range(mails))

    async def session(share: list[int]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
        await client.connect()
        try:
            for number in share:
                to = recipients[number % len(recipients)]
                errors, reply = await client.sendmail(
                    "sender@outside.example", [to], mail(run, number, to)
                )
                assert not errors and reply.startswith("2.0.0"), (errors, reply)
        finally:
            await client.quit()

    await asyncio.gather(*(session(numbers[i::connections]) for i in range(connections)))


async def collect_pushes(ws: ClientConnection, into: list[dict[str, Any]], want: int) -> None:
    while sum(1 for e in into if e["type"] == "message.new") < want:
        into.append(json.loads(await ws.recv()))


async def run_acceptance(
    fleet: Fleet, state: FleetState, *, accounts: int, mails: int, connections: int = 10
) -> Figures:
    figures = Figures(accounts, mails, connections)
    run = secrets.token_hex(3)
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=http_url(state), timeout=60, limits=limits) as client:
        began = time.monotonic()
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> Account:
            async with gate:
                return await sign_up(client, f"u{run}x{i}@{DOMAIN}")

        users = await asyncio.gather(*(one(i) for i in range(accounts)))
        figures.signup_seconds = time.monotonic() - began

        # Spread over both shards: each placement goes to the least-loaded one.
        rows = fleet.sql(
            state,
            "directory",
            "SELECT p.shard, count(*) FROM placements p JOIN accounts a"
            f" ON a.id = p.account_id WHERE a.email LIKE 'u{run}x%' GROUP BY 1 ORDER BY 1",
        )
        figures.shards = {s: int(n) for s, n in (r.split("|") for r in rows.splitlines())}
        assert set(figures.shards) == {"shard1", "shard2"}, figures.shards

        watched = users[0]
        figures.push_expected = len(range(0, mails, accounts))
        start = await client.get(
            "/v1/events",
            params={"timeout": 0},
            headers={"Authorization": f"Bearer {watched.token}"},
        )
        assert start.status_code == 200, start.text
        ws_url = http_url(state).replace("http://", "ws://") + "/v1/events/ws"
        pushed: list[dict[str, Any]] = []
        async with connect(ws_url, proxy=None) as ws:
            await ws.send(json.dumps({"token": watched.token, "cursor": start.json()["cursor"]}))
            listener = asyncio.create_task(collect_pushes(ws, pushed, figures.push_expected))
            began = time.monotonic()
            await send_all(state.ports["smtp"], run, [u.email for u in users], mails, connections)
            figures.send_seconds = time.monotonic() - began

            expected = Counter(n % accounts for n in range(mails))
            deadline = time.monotonic() + 60
            pending = set(range(accounts))
            inboxes: dict[int, list[dict[str, Any]]] = {}
            while pending:
                for i in sorted(pending):
                    inboxes[i] = await inbox_items(client, users[i])
                    if len(inboxes[i]) >= expected[i]:
                        pending.discard(i)
                if pending:
                    assert time.monotonic() < deadline, f"{len(pending)} inboxes incomplete"
                    await asyncio.sleep(0.2)
            figures.visible_seconds = time.monotonic() - began
            await asyncio.wait_for(listener, 30)
        figures.pushed = sum(1 for e in pushed if e["type"] == "message.new")

        # Exactly once, by Message-ID, and every mail where it was sent.
        seen: Counter[str] = Counter()

        async def message_ids(i: int) -> None:
            auth = {"Authorization": f"Bearer {users[i].token}"}
            for item in inboxes[i]:
                async with gate:
                    one = await client.get(f"/v1/messages/{item['id']}", headers=auth)
                assert one.status_code == 200, one.text
                header = one.json()["message_id_header"].strip("<>")
                number = int(header.split(".")[1].split("@")[0])
                assert number % accounts == i, (header, i)
                seen[header] += 1

        await asyncio.gather(*(message_ids(i) for i in range(accounts)))
        want = {f"{run}.{n}@outside.example" for n in range(mails)}
        assert set(seen) == want, f"missing {sorted(want - set(seen))[:5]}"
        twice = [m for m, n in seen.items() if n > 1]
        assert not twice, f"delivered more than once: {twice[:5]}"

        # Searchable: the run's word finds each account's mail, and a mail's
        # own word finds that mail alone.
        async def searched(i: int) -> None:
            auth = {"Authorization": f"Bearer {users[i].token}"}
            async with gate:
                hits = await client.get(
                    "/v1/search", params={"q": f"marker{run}", "limit": 100}, headers=auth
                )
            assert hits.status_code == 200, hits.text
            assert len(hits.json()["items"]) == expected[i], (i, hits.text[:300])

        await asyncio.gather(*(searched(i) for i in range(accounts)))
        for number in (0, mails // 2, mails - 1):
            owner = users[number % accounts]
            hits = await client.get(
                "/v1/search",
                params={"q": f"word{run}n{number}"},
                headers={"Authorization": f"Bearer {owner.token}"},
            )
            assert [h["subject"] for h in hits.json()["items"]] == [f"fleet {run} mail {number}"]

        # Pushed live: every mail to the watched account, as its message.new.
        listed = {item["id"] for item in inboxes[0]}
        news = [e["data"]["id"] for e in pushed if e["type"] == "message.new"]
        assert sorted(news) == sorted(listed)
    return figures
