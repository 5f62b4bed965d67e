"""Blob store contract: content addressing, stored once, durable whole or not at
all, size limits that leave nothing behind."""

from __future__ import annotations

import hashlib
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


async def test_stream_put_matches_put(blobs: BlobStore) -> None:
    blob = await blobs.put_stream(_chunks(b"a" * 10, b"b" * 20), max_size=30)
    assert blob == await blobs.put(b"a" * 10 + b"b" * 20)


async def test_stream_over_limit_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobTooLarge):
        await blobs.put_stream(_chunks(b"a" * 10, b"b" * 21), max_size=30)
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


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
