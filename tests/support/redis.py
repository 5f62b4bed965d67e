"""The Redis server the distributed tests talk to (``MAILFLEET_TEST_REDIS_URL``,
redis://127.0.0.1:6379 by default), and unique key prefixes. Unreachable: the
test is skipped with how to start one, except in CI (CI=true), where it fails."""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import urlsplit

from redis import asyncio as aioredis

from tests.support.tools import missing

DEFAULT_URL = "redis://127.0.0.1:6379"
START_HINT = (
    "start one: `apt-get install redis-server` then"
    " `redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes`,"
    " or point MAILFLEET_TEST_REDIS_URL at one"
)


def redis_url() -> str:
    return os.environ.get("MAILFLEET_TEST_REDIS_URL", DEFAULT_URL)


def unique_prefix(kind: str) -> str:
    """Keys and channels of one test: deleted by it afterwards."""
    return f"t{kind}{secrets.token_hex(5)}"


def with_prefix(url: str, prefix: str) -> str:
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}prefix={prefix}"


async def require_redis() -> str:
    """The server's URL once a TCP connection to it succeeds."""
    url = redis_url()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError) as exc:
        missing(f"no Redis server at {url} ({exc}): {START_HINT}")
    writer.close()
    await writer.wait_closed()
    return url


async def delete_keys(url: str, prefix: str) -> None:
    """Deletes every key under ``prefix:`` (what one test wrote)."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
