"""The ``Cache`` role on Redis (redis-py asyncio): sessions, recent mail and
rate-limit counters shared by every process of the fleet.

Every key is ``<prefix>:<key>``, so that several fleets (or test runs) share a
server. Values live their TTL in milliseconds (``SET PX``). A counter's TTL is
set by the increment that creates it and never renewed, in one Lua script, so
two processes counting at once cannot both see "first" nor leave a counter
that never expires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.exceptions
from redis import asyncio as aioredis
from redis.commands.core import AsyncScript

from mailfleet.storage.errors import BackendUnavailable

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Adds one; the first increment gives the key its TTL. Answers the count and
# the milliseconds the counter has left.
_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


@dataclass(frozen=True, slots=True)
class RedisOptions:
    url: str
    """The server as redis-py takes it (``prefix`` removed)."""
    prefix: str


def parse_redis_url(url: str, default_prefix: str = "mailfleet") -> RedisOptions:
    """``redis://[:password@]host:port/db?prefix=mailfleet``: redis-py's own
    URL, plus the prefix of every key and channel this fleet uses."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected redis://HOST:PORT[/DB][?prefix=...], got {url!r}")
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), default_prefix)
    if not _NAME.match(prefix):
        raise ValueError(f"redis prefix {prefix!r}: letters, digits, '_', '-' and '.' only")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return RedisOptions(urlunsplit(parts._replace(query=rest)), prefix)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


# Redis answers one connection's commands in turn in well under a millisecond:
# a few dozen connections carry thousands of calls a second.
POOL_SIZE = 32


class RedisCache:
    def __init__(self, url: str) -> None:
        self.options = parse_redis_url(url)
        self._client: aioredis.Redis | None = None
        self._incr: AsyncScript | None = None

    def _key(self, key: str) -> str:
        return f"{self.options.prefix}:{key}"

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendUnavailable("the Redis cache is not open")
        return self._client

    async def open(self) -> None:
        if self._client is None:
            # A bounded pool that callers queue for: unbounded, a burst (a
            # thousand SMTP clients at once, each counted by the connection
            # limit) opened a Redis connection per caller and took seconds.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.options.url,
                max_connections=POOL_SIZE,
                timeout=5,
                socket_connect_timeout=2,
                socket_timeout=5,
            )
            self._client = aioredis.Redis.from_pool(pool)  # closed with the client
            # EVALSHA, loading the script again if the server lost it.
            self._incr = self._client.register_script(_INCR)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _call(self, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.options.url}: {exc}") from exc

    async def ping(self) -> None:
        await self._call(self._redis().ping())

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._call(self._redis().get(self._key(key))))

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._call(self._redis().set(self._key(key), value, px=_ms(ttl_seconds)))

    async def delete(self, key: str) -> None:
        await self._call(self._redis().delete(self._key(key)))

    async def incr(self, key: str, ttl_seconds: float) -> tuple[int, float]:
        self._redis()
        assert self._incr is not None
        count, left_ms = await self._call(
            self._incr(keys=[self._key(key)], args=[_ms(ttl_seconds)])
        )
        # PTTL is -1 only for a key someone else wrote without a TTL.
        left = ttl_seconds if int(left_ms) < 0 else int(left_ms) / 1000
        return int(count), left
