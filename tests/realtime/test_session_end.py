"""A session's end reaches what it keeps open: a live WebSocket is closed
(4401) and a waiting long poll answered 401 when the token expires, at logout,
at a password change and when the account is disabled. An expired token
answers 401 ``session_expired`` (an invalid one keeps ``invalid_token``), at
once: a long poll never spins on a session that ended.

(A token's own 401 in every process is tests/api/test_token_revocation.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ..conftest import PASSWORD, Service, StartService, User
from .conftest import REALTIME, receive_until_closed, socket

TTL = 2.0


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def log_in(service: Service, email: str) -> str:
    response = await service.client().post(
        "/v1/sessions", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def long_poll(service: Service, token: str, timeout: float = 30) -> asyncio.Future[httpx.Response]:
    client = service.client(token)
    return asyncio.ensure_future(client.get("/v1/events", params={"timeout": timeout}))


async def test_an_expired_session_answers_session_expired_and_closes_what_it_holds(
    start_service: StartService,
) -> None:
    service = await start_service({"realtime": REALTIME, "auth": {"session_ttl_seconds": TTL}})
    alice = await service.user("alice")
    issued = time.monotonic()
    assert (await alice.client.get("/v1/me")).status_code == 200
    async with socket(service, alice) as ws:
        polling = long_poll(service, alice.token)
        events = await receive_until_closed(ws, timeout=TTL + 3)
        closed = time.monotonic() - issued
        assert events == []
        assert ws.close_code == 4401
        assert "session expired" in (ws.close_reason or "")
        # At expiry, not at a periodic token check (REALTIME checks every 600 s).
        assert TTL - 0.5 < closed < TTL + 1.5
        answer = await asyncio.wait_for(polling, 3)
        assert answer.status_code == 401, answer.text
        assert error_code(answer) == "session_expired"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert time.monotonic() - issued < TTL + 1.5

    me = await alice.client.get("/v1/me")
    assert me.status_code == 401 and error_code(me) == "session_expired"
    # Tokens that never were, or in the wrong shape, stay invalid_token.
    for bad in (alice.token[:-2] + "AA", "nonsense", "1.x"):
        r = await service.client(bad).get("/v1/me")
        assert r.status_code == 401 and error_code(r) == "invalid_token", bad

    # A long poll or a socket with the expired token is answered at once.
    began = time.monotonic()
    for _ in range(5):
        r = await alice.client.get("/v1/events", params={"timeout": 30})
        assert r.status_code == 401 and error_code(r) == "session_expired"
    assert time.monotonic() - began < 1
    async with socket(service, alice) as ws:
        assert await receive_until_closed(ws, timeout=2) == []
        assert ws.close_code == 4401
        assert "expired" in (ws.close_reason or "")
    # Logging in again gives a token that works.
    fresh = await log_in(service, alice.email)
    assert (await service.client(fresh).get("/v1/me")).status_code == 200


Ender = Callable[[Service, User], Awaitable[Any]]


async def _log_out(service: Service, user: User) -> None:
    assert (await user.client.delete("/v1/sessions/current")).status_code == 204


async def _new_password(service: Service, user: User) -> None:
    await service.runtime.accounts.set_password(user.email, "a brand new password")


async def _disable(service: Service, user: User) -> None:
    await service.runtime.accounts.set_disabled(user.email, True)


ENDINGS: dict[str, Ender] = {
    "logout": _log_out,
    "password change": _new_password,
    "user disable": _disable,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_session_ended_closes_its_socket_and_answers_its_long_poll(
    service: Service, alice: User, ending: str
) -> None:
    async with socket(service, alice) as ws:
        polling = long_poll(service, alice.token)
        await asyncio.sleep(0.2)  # both are waiting on the server
        assert not polling.done()
        began = time.monotonic()
        await ENDINGS[ending](service, alice)
        assert await receive_until_closed(ws, timeout=3) == []
        assert ws.close_code == 4401
        assert "session ended" in (ws.close_reason or "")
        answer = await asyncio.wait_for(polling, 3)
        assert answer.status_code == 401, answer.text
        assert error_code(answer) == "invalid_token"
        assert time.monotonic() - began < 2


async def test_another_sessions_logout_leaves_a_long_poll_waiting_without_spinning(
    service: Service, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A revocation of the account wakes every poll of it to check its token
    # again; this one's token is still good, so it must go back to waiting,
    # not read the change log over and over until its timeout.
    other = await log_in(service, alice.email)
    mailbox = service.runtime.stores.mailbox
    reads = 0
    original = mailbox.changes

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await original(*args, **kwargs)

    monkeypatch.setattr(mailbox, "changes", counting)
    polling = long_poll(service, alice.token, timeout=1.5)
    await asyncio.sleep(0.2)
    r = await service.client(other).delete("/v1/sessions/current")
    assert r.status_code == 204
    answer = await asyncio.wait_for(polling, 4)
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == []
    assert reads <= 4, f"the poll read the change log {reads} times"
