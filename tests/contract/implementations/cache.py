"""Implementations of ``Cache`` for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.embedded.memory import MemoryCache
from tests.contract.backends import register


@register("cache", "embedded", "memory")
@asynccontextmanager
async def memory_cache(directory: Path) -> AsyncIterator[MemoryCache]:
    cache = MemoryCache()
    await cache.open()
    try:
        yield cache
    finally:
        await cache.close()
