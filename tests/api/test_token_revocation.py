"""Verified tokens are cached (accounts/tokens.py), yet a token stops working at
once, in every process, when its session is logged out, the password changed
or the account disabled: the API process that did it, another API process on
the same data directory, and through the admin CLI (a third process)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, Service, User
from tests.test_restart import free_port, run_cli, start


@pytest.fixture
async def other_process(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """A second ``mailfleet serve --roles api`` on the same data directory."""
    data_dir = Path(service.runtime.settings.data_dir)
    port = free_port()
    process = await asyncio.to_thread(start, data_dir, port, "--roles", "api")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)


async def me(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def log_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post("/v1/sessions", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def test_a_verified_token_is_not_read_from_the_directory_again(
    service: Service, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = service.runtime.stores.directory
    reads = 0
    original = directory.get_session

    async def counting(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(directory, "get_session", counting)
    token = await log_in(alice.client, alice.email)
    for _ in range(5):
        assert await me(alice.client, token) == 200
    assert reads == 1


async def test_log_out_ends_the_token_at_once_in_every_process(
    alice: User, other_process: httpx.AsyncClient
) -> None:
    token = await log_in(alice.client, alice.email)
    kept = await log_in(alice.client, alice.email)
    # Both processes have verified (and cached) both tokens.
    for client in (alice.client, other_process):
        assert await me(client, token) == 200
        assert await me(client, kept) == 200

    r = await alice.client.delete(
        "/v1/sessions/current", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 204
    assert await me(other_process, token) == 401
    assert await me(alice.client, token) == 401
    # The other session of the same account goes on.
    assert await me(other_process, kept) == 200

    # And the other way round: logged out in the other process.
    r = await other_process.delete(
        "/v1/sessions/current", headers={"Authorization": f"Bearer {kept}"}
    )
    assert r.status_code == 204
    assert await me(alice.client, kept) == 401


async def test_a_new_password_or_disabling_ends_tokens_at_once(
    service: Service, alice: User, other_process: httpx.AsyncClient
) -> None:
    data_dir = Path(service.runtime.settings.data_dir)
    token = await log_in(alice.client, alice.email)
    for client in (alice.client, other_process):
        assert await me(client, token) == 200

    done = await asyncio.to_thread(
        run_cli, data_dir, "user", "passwd", alice.email, "--password-stdin", stdin="new pass 123\n"
    )
    assert done.returncode == 0, done.stderr
    assert await me(other_process, token) == 401
    assert await me(alice.client, token) == 401

    token = await log_in(other_process, alice.email, "new pass 123")
    for client in (alice.client, other_process):
        assert await me(client, token) == 200
    done = await asyncio.to_thread(run_cli, data_dir, "user", "disable", alice.email)
    assert done.returncode == 0, done.stderr
    assert await me(other_process, token) == 401
    assert await me(alice.client, token) == 401
    r = await other_process.post(
        "/v1/sessions", json={"email": alice.email, "password": "new pass 123"}
    )
    assert r.status_code == 401
