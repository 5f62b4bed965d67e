"""Implementations of ``Cache`` for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.distributed.redis_cache import RedisCache
from mailfleet.storage.embedded.memory import MemoryCache
from tests.contract.backends import register
from tests.support.redis import delete_keys, require_redis, unique_prefix, with_prefix


@register("cache", "embedded", "memory")
@asynccontextmanager
async def memory_cache(directory: Path) -> AsyncIterator[MemoryCache]:
    cache = MemoryCache()
    await cache.open()
    try:
        yield cache
    finally:
        await cache.close()


@register("cache", "distributed", "redis")
@asynccontextmanager
async def redis_cache(directory: Path) -> AsyncIterator[RedisCache]:
    server = await require_redis()
    prefix = unique_prefix("c")
    cache = RedisCache(with_prefix(server, prefix))
    await cache.open()
    try:
        yield cache
    finally:
        await cache.close()
        await delete_keys(server, prefix)
