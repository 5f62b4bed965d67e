"""The chaos run of issue 14, shared by the test on one data directory
(``test_chaos.py``, each role its own process), the one on the local fleet
(``tests/fleet/test_chaos.py``) and ``bench/chaos.py``: SMTP clients send
mails to many accounts while a loop kills role processes with SIGKILL and
starts them again; a reader marks mail read through the API meanwhile.

What it proves, at the end: every mail answered 250 is in its recipient's
Inbox exactly once (by Message-ID, with the body that was sent); every other
mail got a 4xx/5xx reply or a dropped connection, and is there at most once
(a connection cut after the final dot but before the reply may or may not
have been kept: the sending MTA would try again, as RFC 5321 section 4.1.1.4
says it must); folder counters equal the rows they count; nothing is left on
``incoming`` or ``error``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import httpx

PASSWORD = "correct horse battery"
SENDER = "chaos@outside.example"


@dataclass(frozen=True)
class Load:
    """How much chaos: CI's short form by default; ``bench/chaos.py`` sets
    ``CHAOS_MAILS``, ``CHAOS_ACCOUNTS``, ``CHAOS_CONNECTIONS`` and
    ``CHAOS_SECONDS`` for the long one."""

    mails: int
    accounts: int
    connections: int
    seconds: float  # of sending, at most (fewer when sending cannot keep up)

    @classmethod
    def from_env(cls, seconds: float) -> Load:
        return cls(
            mails=int(os.environ.get("CHAOS_MAILS", "500")),
            accounts=int(os.environ.get("CHAOS_ACCOUNTS", "25")),
            connections=int(os.environ.get("CHAOS_CONNECTIONS", "5")),
            seconds=float(os.environ.get("CHAOS_SECONDS", seconds)),
        )

    @property
    def pace(self) -> float:
        """Seconds between two mails of one connection."""
        return self.connections * self.seconds / self.mails

    @property
    def settle_seconds(self) -> float:
        """Patience for the last mails to be delivered once the chaos stops."""
        return max(90, self.mails / 25)

    @property
    def timeout(self) -> float:
        """The whole test's, for pytest-timeout."""
        return 240 + self.seconds + self.mails / 5 + 2 * self.settle_seconds


@dataclass
class Outcomes:
    """What each mail's sender was told, by mail number."""

    accepted: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)  # 4xx/5xx reply
    dropped: dict[int, str] = field(default_factory=dict)  # connection lost or refused

    def line(self) -> str:
        codes = Counter(r.split(" ", 1)[0] for r in self.refused.values())
        return (
            f"{len(self.accepted)} accepted (250), {len(self.refused)} refused {dict(codes)},"
            f" {len(self.dropped)} dropped"
        )


@dataclass
class Account:
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def body_of(run: str, number: int) -> str:
    return f"Chaos mail {number} of run {run}.\r\nmarker{run} n{number}\r\n"


def mail(run: str, number: int, to: str) -> bytes:
    return (
        f"From: Chaos <{SENDER}>\r\nTo: {to}\r\nSubject: chaos {run} {number}\r\n"
        f"Message-ID: <{run}.{number}@outside.example>\r\n\r\n{body_of(run, number)}"
    ).encode()


async def sign_up(client: httpx.AsyncClient, email: str) -> Account:
    made = await client.post("/v1/accounts", json={"email": email, "password": PASSWORD})
    assert made.status_code == 201, made.text
    login = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert login.status_code == 201, login.text
    return Account(email, login.json()["token"])


async def send_mails(
    smtp_port: int,
    run: str,
    recipients: Sequence[str],
    mails: int,
    connections: int,
    pace: float = 0,
) -> Outcomes:
    """Sends mail 0..mails-1 (the i-th to ``recipients[i % n]``) over
    ``connections`` clients, each going on with its next mail, on a new
    connection, when one is lost, ``pace`` seconds after the last. Nothing is
    sent twice: what the sender was told is what is checked."""
    outcomes = Outcomes()
    numbers = list(range(mails))

    async def client_loop(share: list[int]) -> None:
        smtp: aiosmtplib.SMTP | None = None
        for number in share:
            to = recipients[number % len(recipients)]
            if smtp is None:
                smtp = await _connect(smtp_port)
            try:
                errors, _ = await smtp.sendmail(SENDER, [to], mail(run, number, to))
                if errors:
                    outcomes.refused[number] = str(errors)
                else:
                    outcomes.accepted.add(number)
            except aiosmtplib.SMTPResponseException as exc:
                outcomes.refused[number] = f"{exc.code} {exc.message}"
                if exc.code == 421:  # the server hangs up after a 421
                    smtp = await _dropped(smtp)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                outcomes.dropped[number] = repr(exc)
                smtp = await _dropped(smtp)
            if pace:
                await asyncio.sleep(pace)
        if smtp is not None:
            await _dropped(smtp, quit=True)

    await asyncio.gather(*(client_loop(numbers[i::connections]) for i in range(connections)))
    return outcomes


async def _connect(port: int, patience: float = 30) -> aiosmtplib.SMTP:
    """A new session, tried again while the MX is down (being started
    again): a mail not yet begun is not a mail lost, and a sending MTA would
    try again."""
    deadline = time.monotonic() + patience
    while True:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20, start_tls=False)
        try:
            await smtp.connect()
            return smtp
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _dropped(smtp: aiosmtplib.SMTP | None, quit: bool = False) -> None:
    if smtp is None:
        return None
    try:
        if quit:
            await smtp.quit()
        else:
            smtp.close()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
    return None


async def chaos_loop(
    victims: Sequence[str],
    kill: Callable[[str], Awaitable[None]],
    start: Callable[[str], Awaitable[None]],
    stop: asyncio.Event,
    every: tuple[float, float],
    rng: random.Random,
) -> list[tuple[float, str]]:
    """Until ``stop``: every ``every`` seconds (a random time in the range),
    SIGKILL a victim and start it again at once; victims are taken in rounds,
    each in a random order, so that every one dies early. Returns (seconds
    since the start, name) of each kill."""
    began = time.monotonic()
    kills: list[tuple[float, str]] = []
    deck: list[str] = []
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*every))
            break
        except TimeoutError:
            pass
        if not deck:
            deck = rng.sample(list(victims), len(victims))
        name = deck.pop()
        await kill(name)
        kills.append((time.monotonic() - began, name))
        await start(name)
    return kills


@dataclass
class ChaosRun:
    outcomes: Outcomes
    kills: list[tuple[float, str]]
    marked: int  # mails the reader marked read meanwhile

    def line(self) -> str:
        kills = f"{len(self.kills)} kills {self.kills}"
        return f"{self.outcomes.line()}; {kills}; {self.marked} marked read"


async def send_under_chaos(
    client: httpx.AsyncClient,
    accounts: list[Account],
    smtp_port: int,
    run: str,
    load: Load,
    victims: Sequence[str],
    kill: Callable[[str], Awaitable[None]],
    start: Callable[[str], Awaitable[None]],
    every: tuple[float, float],
    rng: random.Random,
) -> ChaosRun:
    """``load``'s mails sent while ``chaos_loop`` kills ``victims`` and a
    reader marks mail read; the kills are printed even when sending fails,
    so that a failure says which restart it followed."""
    stop = asyncio.Event()
    chaos = asyncio.create_task(chaos_loop(victims, kill, start, stop, every, rng))
    reader = asyncio.create_task(mark_read_loop(client, accounts, stop, rng))
    try:
        outcomes = await send_mails(
            smtp_port, run, [a.email for a in accounts], load.mails, load.connections,
            pace=load.pace,
        )  # fmt: skip
    finally:
        stop.set()
        kills = await chaos
        marked = await reader
        print(f"kills (seconds, role): {kills}")
    return ChaosRun(outcomes, kills, marked)


async def mark_read_loop(
    client: httpx.AsyncClient, accounts: Sequence[Account], stop: asyncio.Event, rng: random.Random
) -> int:
    """Until ``stop``: marks a random Inbox message of a random account read,
    through the API (which chaos restarts: a failed call is tried later).
    Returns how many PATCHes were answered 200."""
    done = 0
    while not stop.is_set():
        account = rng.choice(accounts)
        try:
            folders = await client.get("/v1/folders", headers=account.auth)
            if folders.status_code != 200:  # no api process up at this moment
                await asyncio.sleep(0.1)
                continue
            inbox = next(f for f in folders.json() if f["role"] == "inbox")
            page = await client.get(
                f"/v1/folders/{inbox['id']}/messages",
                params={"is_read": "false", "limit": 20},
                headers=account.auth,
            )
            items = page.json()["items"] if page.status_code == 200 else []
            if items:
                patched = await client.patch(
                    f"/v1/messages/{rng.choice(items)['id']}",
                    json={"is_read": True},
                    headers=account.auth,
                )
                done += patched.status_code == 200
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.05)
    return done


async def _inbox(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    folders = await client.get("/v1/folders", headers=account.auth)
    assert folders.status_code == 200, folders.text
    inbox: dict[str, Any] = next(f for f in folders.json() if f["role"] == "inbox")
    return inbox


async def inbox_listing(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    inbox = await _inbox(client, account)
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await client.get(
            f"/v1/folders/{inbox['id']}/messages", params=params, headers=account.auth
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json().get("next_cursor")
        if not cursor:
            return items


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30) -> None:
    """Until ``/readyz`` answers 200 (through a balancer: once its health
    checks have seen a restarted process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not ready in {timeout} s"
        await asyncio.sleep(0.1)


async def wait_until_delivered(
    client: httpx.AsyncClient,
    accounts: Sequence[Account],
    expected: Counter[int],
    timeout: float,
) -> None:
    """Until each account's Inbox holds at least ``expected[i]`` messages."""
    deadline = time.monotonic() + timeout
    pending = set(range(len(accounts)))
    while pending:
        for i in sorted(pending):
            inbox = await _inbox(client, accounts[i])
            if inbox["total"] >= expected[i]:
                pending.discard(i)
        if pending:
            assert time.monotonic() < deadline, (
                f"{len(pending)} inboxes still short of their accepted mail after {timeout} s"
            )
            await asyncio.sleep(0.25)


async def verify(
    client: httpx.AsyncClient, run: str, accounts: Sequence[Account], outcomes: Outcomes
) -> int:
    """The end state (module docstring). Returns the number of stored copies."""
    prefix = f"chaos {run} "
    found: Counter[int] = Counter()
    stored = 0
    for i, account in enumerate(accounts):
        items = await inbox_listing(client, account)
        inbox = await _inbox(client, account)
        # Counters equal the rows they count.
        assert inbox["total"] == len(items), (account.email, inbox, len(items))
        unread = sum(1 for item in items if not item["is_read"])
        assert inbox["unread"] == unread, (account.email, inbox, unread)
        for item in items:
            if not item["subject"].startswith(prefix):
                continue  # another run's mail (a probe)
            number = int(item["subject"].removeprefix(prefix))
            assert number % len(accounts) == i, (account.email, number)
            found[number] += 1
            stored += 1
            # The copy is the mail that was sent: its Message-ID and body.
            full = await client.get(f"/v1/messages/{item['id']}", headers=account.auth)
            assert full.status_code == 200, full.text
            message = full.json()
            assert message["message_id_header"] == f"<{run}.{number}@outside.example>", message
            sent = body_of(run, number).replace("\r\n", "\n").strip()
            got = message["body"].replace("\r\n", "\n").strip()
            assert (
                hashlib.sha256(got.encode()).digest() == hashlib.sha256(sent.encode()).digest()
            ), (
                number,
                got,
            )
    twice = {n: c for n, c in found.items() if c > 1}
    assert not twice, f"stored more than once: {twice}"
    lost = sorted(outcomes.accepted - set(found))
    assert not lost, f"answered 250 but not delivered: {lost[:20]} ({len(lost)} in all)"
    # Mails that were not accepted: the sender was told so, or lost the
    # connection, and tries again; at most the one copy above.
    untold = set(found) - outcomes.accepted - set(outcomes.refused) - set(outcomes.dropped)
    assert not untold, f"stored but never sent: {sorted(untold)[:20]}"
    return stored


def new_run() -> str:
    return secrets.token_hex(3)
