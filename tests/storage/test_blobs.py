"""Blob store contract: content addressing, stored once, durable whole or not at
all, size limits that leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.errors import BlobMissing, BlobTooLarge
from mailfleet.storage.interfaces import BlobStore


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = FileBlobStore(tmp_path / "blobs")
    await store.open()
    yield store
    await store.close()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_get_by_content_hash(blobs: BlobStore) -> None:
    data = b"hello world" * 1000
    blob = await blobs.put(data)
    assert blob.hash == hashlib.sha256(data).hexdigest()
    assert blob.size == len(data)
    assert await blobs.get(blob.hash) == data
    assert b"".join([c async for c in blobs.stream(blob.hash, chunk_size=7)]) == data
    assert await blobs.exists(blob.hash)
    assert await blobs.put(data) == blob  # same content, same name, stored once


@pytest.mark.parametrize("size", [0, 1, 4096, 128 * 1024, 128 * 1024 + 1, 300_000])
async def test_small_and_large_blobs_survive_reopen(tmp_path: Path, size: int) -> None:
    """Small blobs live in the pack, large ones in files: the same contract,
    and both are there after the store is closed and opened again."""
    data = os.urandom(size)
    store = FileBlobStore(tmp_path / "blobs")
    await store.open()
    blob = await store.put(data)
    await store.close()
    again = FileBlobStore(tmp_path / "blobs")
    await again.open()
    try:
        assert await again.get(blob.hash) == data
        assert await again.exists(blob.hash)
        assert b"".join([c async for c in again.stream(blob.hash, chunk_size=4096)]) == data
        assert await again.put(data) == blob
        await again.delete(blob.hash)
        assert not await again.exists(blob.hash)
        with pytest.raises(BlobMissing):
            await again.get(blob.hash)
    finally:
        await again.close()


async def test_concurrent_small_puts(blobs: BlobStore) -> None:
    datas = [os.urandom(4096) for _ in range(50)]
    stored = await asyncio.gather(*(blobs.put(d) for d in datas))
    assert [await blobs.get(b.hash) for b in stored] == datas


async def test_stream_put_matches_put(blobs: BlobStore) -> None:
    blob = await blobs.put_stream(_chunks(b"a" * 10, b"b" * 20), max_size=30)
    assert blob == await blobs.put(b"a" * 10 + b"b" * 20)


async def test_stream_over_limit_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobTooLarge):
        await blobs.put_stream(_chunks(b"a" * 10, b"b" * 21), max_size=30)
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert [p for p in files if not p.name.startswith("small.sqlite")] == []


async def test_missing_and_malformed_names(blobs: BlobStore) -> None:
    with pytest.raises(BlobMissing):
        await blobs.get("0" * 64)
    with pytest.raises(BlobMissing):
        await blobs.get("../../etc/passwd")
    assert not await blobs.exists("f" * 64)


async def test_delete(blobs: BlobStore) -> None:
    blob = await blobs.put(b"x")
    await blobs.delete(blob.hash)
    assert not await blobs.exists(blob.hash)
    await blobs.delete(blob.hash)  # deleting twice is fine
