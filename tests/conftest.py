"""Fixtures: a real mailfleet server on loopback ports with its own data
directory, and HTTP clients that talk to it over TCP like any outside client.

The server runs on each storage profile ``MAILFLEET_TEST_BACKENDS`` selects
(``embedded`` by default; ``embedded,distributed`` runs every server test on
both, ``distributed`` on PostgreSQL shards, S3, NATS JetStream and Redis only):
the ``profile`` fixture is parametrized by them and gives each data directory
its storage (``tests/support/profile.py``). A test that holds only on the
embedded profile is marked ``@pytest.mark.embedded_only("why")``; one that
needs what only the distributed profile has (state shared by processes),
``@pytest.mark.distributed_only("why")``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailfleet.config import Settings, deep_merge, load_settings
from mailfleet.server import ROLES, Server
from tests.support.clamd import Clamd, running_clamd
from tests.support.profile import Profile, provisioner, selected_profiles, stored_blobs

DOMAIN = "example.com"
# Sender authentication asks DNS about every inbound mail's sender: the
# tests' servers (in this process and the ones they start) would ask the
# machine's resolver about test domains. The tests of it turn it on with a
# DNS server of their own (tests/smtp/test_sender_auth_smtp.py).
os.environ["MAILFLEET_FILTERS__SENDER_AUTH"] = "false"
# worker-out would try to deliver the remote mail tests queue: tests of
# outbound delivery start it themselves, with a DNS server or routes of their own.
TEST_ROLES = tuple(role for role in ROLES if role != "worker-out")
PASSWORD = "correct horse battery"

# Argon2id with RFC 9106's memory cost makes each sign-up and login take tens
# of milliseconds; the tests check behaviour, not hashing cost.
FAST_AUTH = {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1}


def make_settings(data_dir: Path, overrides: dict[str, Any] | None = None) -> Settings:
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "http": {"listen": "127.0.0.1:0"},
        "smtp": {"listen": "127.0.0.1:0", "submission_listen": "127.0.0.1:0"},
        "auth": FAST_AUTH,
        "limits": {"send_per_minute": 10_000, "send_per_day": 100_000},
        "domains": [{"name": DOMAIN, "open_signup": True}],
    }
    return load_settings(None, deep_merge(values, overrides or {}))


class User:
    """A signed-up, logged-in account and a client carrying its token."""

    def __init__(self, client: httpx.AsyncClient, account: dict[str, Any], token: str) -> None:
        self.client = client
        self.account = account
        self.token = token
        self.email: str = account["email"]
        self.id: str = account["id"]

    async def folder(self, role: str) -> dict[str, Any]:
        folders = (await self.client.get("/v1/folders")).json()
        return next(f for f in folders if f["role"] == role)

    async def messages(self, role: str, **params: Any) -> list[dict[str, Any]]:
        folder = await self.folder(role)
        response = await self.client.get(f"/v1/folders/{folder['id']}/messages", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def wait_for(self, role: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The folder's messages once it holds ``count`` (mail from SMTP is
        delivered by worker-in, a moment after the 250)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            items = await self.messages(role)
            if len(items) >= count or asyncio.get_running_loop().time() > deadline:
                return items
            await asyncio.sleep(0.02)

    async def send(self, **body: Any) -> dict[str, Any]:
        body.setdefault("subject", "Hello")
        response = await self.client.post("/v1/messages", json=body)
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    async def upload(self, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/attachments", files={"file": (filename, data, content_type)}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


class Service:
    def __init__(self, server: Server) -> None:
        self.server = server
        host, port = server.http_address
        self.base_url = f"http://{host}:{port}"
        self.smtp_port = server.smtp_address[1] if server.smtp_socket else 0
        self.clients: list[httpx.AsyncClient] = []
        self.closed = False

    @property
    def runtime(self) -> Any:
        return self.server.runtime

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    async def user(self, local: str, name: str = "") -> User:
        anonymous = self.client()
        email = f"{local}@{DOMAIN}"
        response = await anonymous.post(
            "/v1/accounts", json={"email": email, "password": PASSWORD, "name": name or local}
        )
        assert response.status_code == 201, response.text
        login = await anonymous.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert login.status_code == 201, login.text
        token = login.json()["token"]
        return User(self.client(token), response.json(), token)

    async def stored_blobs(self) -> dict[str, int]:
        """Every object in the blob store (leftovers included) and its size."""
        return await stored_blobs(self.runtime.stores.blobs)

    async def close(self) -> None:
        self.closed = True
        for client in self.clients:
            await client.aclose()
        await self.server.stop()


StartService = Callable[..., Awaitable[Service]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "embedded_only(reason): holds only on the embedded profile; skipped with the"
        " reason on the distributed one",
    )
    config.addinivalue_line(
        "markers",
        "distributed_only(reason): holds only on the distributed profile; skipped with the"
        " reason on the embedded one",
    )


@pytest.fixture(scope="session", autouse=True)
def _storage_provisioner() -> Iterator[None]:
    """Waits, at the end, for the distributed storage still being removed."""
    yield
    provisioner().close()


@pytest.fixture(params=selected_profiles())
def profile(request: pytest.FixtureRequest) -> Iterator[Profile]:
    """The storage profile of this test's servers and CLI runs."""
    marker = request.node.get_closest_marker("embedded_only")
    if request.param != "embedded" and marker is not None:
        pytest.skip(f"embedded-only: {marker.args[0]}")
    marker = request.node.get_closest_marker("distributed_only")
    if request.param != "distributed" and marker is not None:
        pytest.skip(f"distributed-only: {marker.args[0]}")
    chosen = Profile(request.param)
    yield chosen
    chosen.release()


@pytest.fixture
async def start_service(tmp_path: Path, profile: Profile) -> AsyncIterator[StartService]:
    """Starts a server; ``overrides`` are settings merged over the test defaults
    and the profile's storage."""
    started: list[Service] = []

    async def start(
        overrides: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        roles: tuple[str, ...] = TEST_ROLES,
    ) -> Service:
        data = data_dir or tmp_path / "data"
        storage = {"storage": profile.storage(data)}
        settings = make_settings(data, deep_merge(storage, overrides or {}))
        server = await Server.open(settings, roles)
        await server.start()
        service = Service(server)
        started.append(service)
        return service

    yield start
    for service in started:
        if not service.closed:
            await service.close()


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()


@pytest.fixture
async def alice(service: Service) -> User:
    return await service.user("alice", "Alice Example")


@pytest.fixture
async def bob(service: Service) -> User:
    return await service.user("bob", "Bob Example")


@pytest.fixture(scope="session")
def clamd() -> Iterator[Clamd]:
    """The tests' own clamd (tests/support/clamd.py), started once."""
    with running_clamd() as running:
        yield running
