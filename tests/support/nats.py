"""The NATS server the distributed tests talk to (``MAILFLEET_TEST_NATS_URL``,
the machine's server with JetStream on 127.0.0.1:4222 by default), and unique
names for what a test creates there. Unreachable: the test is skipped with how
to start one, except in CI (CI=true), where it fails."""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import urlsplit

from tests.support.tools import missing

DEFAULT_URL = "nats://127.0.0.1:4222"
START_HINT = (
    "start one with JetStream on: `apt-get install nats-server` then"
    " `nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/nats-js &`,"
    " or point MAILFLEET_TEST_NATS_URL at one"
)


def nats_url() -> str:
    return os.environ.get("MAILFLEET_TEST_NATS_URL", DEFAULT_URL)


def unique_prefix(kind: str) -> str:
    """A prefix no other test run uses: streams and subjects named after it
    never collide, and the test deletes them by it."""
    return f"t{kind}{secrets.token_hex(5)}"


async def require_nats() -> str:
    """The server's URL once a TCP connection to it succeeds."""
    url = nats_url()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError) as exc:
        missing(f"no NATS server at {url} ({exc}): {START_HINT}")
    writer.close()
    await writer.wait_closed()
    return url
