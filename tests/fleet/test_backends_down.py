"""Issue 12's acceptance on the local fleet: while PostgreSQL (every cluster),
NATS (all three nodes) or the S3 server is stopped, the service answers HTTP
503 and SMTP 451 through the balancer, never a 250 or 202 that is later lost,
and it recovers by itself within 10 s of the backend's return (measured from
the moment the backend answers again: the recovery of the backend itself,
such as a JetStream leader election, is not ours to count).

Each 250 given during an outage must be delivered once the backend is back;
each mail accepted after the return too, exactly once."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aiosmtplib
import httpx
import pytest

from mailfleet.localfleet import DOMAIN, Fleet, FleetState
from tests.fleet.acceptance import Account, http_url, inbox_items, sign_up

pytestmark = pytest.mark.fleet

RECOVERY_SECONDS = 10
# The NATS queue's publish_patience in the fleet is 6 s: a 451 comes after it.
SLOWEST_REFUSAL_SECONDS = 12


async def smtp_send(state: FleetState, to: str, message_id: str) -> tuple[int, float]:
    """The reply code to the whole transaction (the first non-2xx of RCPT or
    DATA), and how long it took."""
    began = time.monotonic()
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=state.ports["smtp"],
        timeout=60,
        start_tls=False,
        local_hostname="client.example.net",
    )
    await client.connect()
    try:
        await client.mail("sender@outside.example")
        code, _ = await client.rcpt(to)
        if code == 250:
            body = (
                f"From: sender@outside.example\r\nTo: {to}\r\nSubject: outage {message_id}\r\n"
                f"Message-ID: <{message_id}>\r\n\r\nduring an outage\r\n"
            ).encode()
            code, _ = await client.data(body)
    except aiosmtplib.SMTPResponseException as refused:
        code = refused.code
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
    return code, time.monotonic() - began


async def http_probe(client: httpx.AsyncClient, kind: str, user: Account, peer: Account) -> int:
    """The request that needs ``kind``: a listing (PostgreSQL), a send to a
    remote domain (its `outgoing` item: NATS), a send (its blobs: S3)."""
    auth = {"Authorization": f"Bearer {user.token}"}
    if kind == "postgres":
        answer = await client.get("/v1/folders", headers=auth)
    else:
        to = "someone@remote.example" if kind == "nats" else peer.email
        answer = await client.post(
            "/v1/messages",
            json={"to": [to], "subject": f"probe {kind}", "body": "probe"},
            headers=auth,
        )
    if answer.status_code == 503:
        assert answer.json()["error"]["code"], answer.text
    return answer.status_code


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["postgres", "nats", "s3"])
async def test_a_stopped_backend_means_try_later_and_the_service_recovers_alone(
    fleet: tuple[Fleet, FleetState], kind: str
) -> None:
    running, state = fleet
    run = secrets.token_hex(3)
    async with httpx.AsyncClient(base_url=http_url(state), timeout=60) as client:
        # The previous case's backend is back, but every pool connection it
        # broke fails once (asyncpg: "shutting down") before it is replaced:
        # a sign-up may answer 503 for about a second.
        user = await _signed_up(client, f"o{run}a@{DOMAIN}")
        peer = await _signed_up(client, f"o{run}b@{DOMAIN}")
        accepted: list[str] = []  # Message-IDs answered 250

        await asyncio.to_thread(running.stop_backend, kind)
        try:
            readyz = await client.get("/readyz")
            assert readyz.status_code == 503, readyz.text
            smtp_ids = [f"{run}.down{i}@outside.example" for i in range(2)]
            (code, took), probe = await asyncio.gather(
                smtp_send(state, peer.email, smtp_ids[0]), http_probe(client, kind, user, peer)
            )
            assert probe == 503
            assert took < SLOWEST_REFUSAL_SECONDS, took
            if kind == "postgres":
                # smtp-in needs no PostgreSQL to store a mail durably (S3 and
                # NATS) once the recipient is known (cached): a 250 is right,
                # if the mail arrives when PostgreSQL is back.
                assert code in (250, 451), code
            else:
                assert code == 451, code
            if code == 250:
                accepted.append(smtp_ids[0])
        finally:
            await asyncio.to_thread(running.start_backend, kind)
        back = time.monotonic()

        # Recovery: every check passes again, without touching the processes.
        # Each check polls on its own, so one's wait for a refusal does not
        # delay another's success.
        async def until(check: Any) -> float:
            while not await check():
                assert time.monotonic() - back < RECOVERY_SECONDS + 10, "not recovered"
                await asyncio.sleep(0.2)
            return time.monotonic() - back

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        async def http() -> bool:
            status = await http_probe(client, kind, user, peer)
            assert status in (200, 202, 503), status
            return status in (200, 202)

        sent = iter(range(1, 1000))

        async def smtp() -> bool:
            message_id = f"{run}.after{next(sent)}@outside.example"
            code, _ = await smtp_send(state, peer.email, message_id)
            assert code in (250, 451), code
            if code == 250:
                accepted.append(message_id)
            return code == 250

        times = await asyncio.gather(until(ready), until(http), until(smtp))
        recovered = dict(zip(("readyz", "http", "smtp"), times, strict=True))
        print(f"\n{kind}: recovered after {recovered}")
        assert max(recovered.values()) < RECOVERY_SECONDS, recovered

        # Nothing answered 250 is lost, and nothing arrives twice.
        deadline = time.monotonic() + 30
        while True:
            ids = await _message_ids(client, peer)
            if all(m in ids for m in accepted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        for message_id in accepted:
            assert ids.count(message_id) == 1, (message_id, ids)


async def _message_ids(client: httpx.AsyncClient, account: Account) -> list[str]:
    auth = {"Authorization": f"Bearer {account.token}"}
    ids: list[str] = []
    for item in await inbox_items(client, account):
        one: Any = (await client.get(f"/v1/messages/{item['id']}", headers=auth)).json()
        ids.append(one["message_id_header"].strip("<>"))
    return ids


async def _signed_up(client: httpx.AsyncClient, email: str) -> Account:
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        try:
            return await sign_up(client, email)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
