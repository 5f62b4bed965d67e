"""Blob store contract (``storage/interfaces.py``), run against every selected
``BlobStore`` implementation: content addressing, stored once, streams whole,
durable whole or not at all, size limits that leave nothing behind, missing
blobs raise ``BlobMissing``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.errors import BlobMissing, BlobTooLarge
from mailfleet.storage.interfaces import BlobStore
from tests.contract import backends

# Both sides of the embedded store's split (pack rows up to 128 KiB, files
# above), and sizes that are not a multiple of any chunk size.
SIZES = [0, 1, 4096, 128 * 1024, 128 * 1024 + 1, 300_001]


@pytest.fixture(params=backends.params("blob"))
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    async for opened in backends.opened(request.param, tmp_path):
        yield opened


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(blobs: BlobStore, blob_hash: str, chunk_size: int) -> list[bytes]:
    return [chunk async for chunk in blobs.stream(blob_hash, chunk_size=chunk_size)]


async def test_put_get_by_content_hash(blobs: BlobStore) -> None:
    data = b"hello world" * 1000
    blob = await blobs.put(data)
    assert blob.hash == hashlib.sha256(data).hexdigest()
    assert blob.size == len(data)
    assert await blobs.get(blob.hash) == data
    assert await blobs.exists(blob.hash)


async def test_put_is_idempotent(blobs: BlobStore) -> None:
    data = os.urandom(5000)
    first = await blobs.put(data)
    assert await blobs.put(data) == first  # same content, same name, stored once
    assert await blobs.get(first.hash) == data


@pytest.mark.parametrize("size", SIZES)
async def test_stream_gives_every_byte_in_chunks(blobs: BlobStore, size: int) -> None:
    data = os.urandom(size)
    blob = await blobs.put(data)
    for chunk_size in (7, 4096, 65536):
        chunks = await _read(blobs, blob.hash, chunk_size)
        assert b"".join(chunks) == data
        assert all(0 < len(c) <= chunk_size for c in chunks)
    assert await blobs.get(blob.hash) == data


async def test_put_stream_matches_put(blobs: BlobStore) -> None:
    blob = await blobs.put_stream(_chunks(b"a" * 10, b"b" * 20), max_size=30)
    assert blob == await blobs.put(b"a" * 10 + b"b" * 20)
    large = [os.urandom(70_000) for _ in range(3)]
    streamed = await blobs.put_stream(_chunks(*large), max_size=1 << 20)
    assert await blobs.get(streamed.hash) == b"".join(large)


@pytest.mark.parametrize("parts", [(b"a" * 10, b"b" * 21), (os.urandom(200_000),)])
async def test_put_stream_too_large_leaves_nothing(
    blobs: BlobStore, parts: tuple[bytes, ...]
) -> None:
    data = b"".join(parts)
    with pytest.raises(BlobTooLarge):
        await blobs.put_stream(_chunks(*parts), max_size=len(data) - 1)
    assert not await blobs.exists(hashlib.sha256(data).hexdigest())


async def test_missing_and_malformed_names_raise_blob_missing(blobs: BlobStore) -> None:
    with pytest.raises(BlobMissing):
        await blobs.get("0" * 64)
    with pytest.raises(BlobMissing):
        await blobs.get("../../etc/passwd")
    with pytest.raises(BlobMissing):
        await _read(blobs, "0" * 64, 4096)
    assert not await blobs.exists("f" * 64)


async def test_exists_and_delete(blobs: BlobStore) -> None:
    blob = await blobs.put(b"x")
    assert await blobs.exists(blob.hash)
    await blobs.delete(blob.hash)
    assert not await blobs.exists(blob.hash)
    with pytest.raises(BlobMissing):
        await blobs.get(blob.hash)
    await blobs.delete(blob.hash)  # deleting twice is fine


async def test_concurrent_puts(blobs: BlobStore) -> None:
    datas = [os.urandom(4096) for _ in range(50)]
    stored = await asyncio.gather(*(blobs.put(d) for d in datas))
    assert [await blobs.get(b.hash) for b in stored] == datas


# -- the file store's own: its layout on disk -----------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_files_survive_reopen(tmp_path: Path, size: int) -> None:
    """Small blobs live in the pack, large ones in files: both are there
    after the store is closed and opened again."""
    data = os.urandom(size)
    store = FileBlobStore(tmp_path / "blobs")
    await store.open()
    blob = await store.put(data)
    await store.close()
    again = FileBlobStore(tmp_path / "blobs")
    await again.open()
    try:
        assert await again.get(blob.hash) == data
        assert await again.put(data) == blob
    finally:
        await again.close()


async def test_files_stream_over_limit_leaves_no_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        with pytest.raises(BlobTooLarge):
            await store.put_stream(_chunks(os.urandom(100_000), os.urandom(100_000)), 150_000)
    finally:
        await store.close()
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert [p for p in files if not p.name.startswith("small.sqlite")] == []


# -- the lifecycle (decision 0018): listing, condemn, restore, purge -----------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# Object stores date objects in whole seconds: a time may be a second early.
SLACK_MS = 1000


async def _live(blobs: BlobStore) -> dict[str, int]:
    return {b.hash: b.at for b in await blobs.list_blobs(after="", limit=10_000)}


async def _condemned(blobs: BlobStore) -> dict[str, int]:
    return {b.hash: b.at for b in await blobs.list_condemned(after="", limit=10_000)}


async def test_list_blobs_in_hash_order_by_pages(blobs: BlobStore) -> None:
    before = _now_ms()
    # Both sides of the file store's split, and a streamed one.
    stored = [await blobs.put(os.urandom(size)) for size in (10, 5000, 128 * 1024 + 1)]
    stored.append(await blobs.put_stream(_chunks(os.urandom(70_000)), max_size=1 << 20))
    stored += [await blobs.put(os.urandom(100)) for _ in range(6)]
    after = _now_ms()
    hashes = sorted(b.hash for b in stored)
    listed = await blobs.list_blobs(after="", limit=100)
    assert [b.hash for b in listed] == hashes
    assert all(before - SLACK_MS <= b.at <= after for b in listed)
    pages: list[str] = []
    cursor = ""
    while page := await blobs.list_blobs(after=cursor, limit=3):
        assert len(page) <= 3
        pages += [b.hash for b in page]
        cursor = page[-1].hash
    assert pages == hashes
    assert [b.hash for b in await blobs.list_blobs(after=hashes[4], limit=100)] == hashes[5:]


@pytest.mark.parametrize("size", [100, 128 * 1024 + 1])
async def test_a_condemned_blob_is_still_read_until_purged(blobs: BlobStore, size: int) -> None:
    data = os.urandom(size)
    blob = await blobs.put(data)
    before = _now_ms()
    await blobs.condemn(blob.hash)
    after = _now_ms()
    assert blob.hash not in await _live(blobs)
    condemned = await _condemned(blobs)
    assert before - SLACK_MS <= condemned[blob.hash] <= after
    assert await blobs.exists(blob.hash)
    assert await blobs.get(blob.hash) == data
    assert b"".join(await _read(blobs, blob.hash, 4096)) == data
    # Condemned after this time: not purged by it.
    assert not await blobs.purge(blob.hash, condemned_before=before - 1)
    assert await blobs.get(blob.hash) == data
    assert await blobs.purge(blob.hash, condemned_before=_now_ms())
    assert not await blobs.exists(blob.hash)
    with pytest.raises(BlobMissing):
        await blobs.get(blob.hash)
    assert blob.hash not in await _condemned(blobs)
    assert not await blobs.purge(blob.hash, condemned_before=_now_ms())


@pytest.mark.parametrize("size", [100, 128 * 1024 + 1])
async def test_a_put_after_condemn_is_live_and_survives_the_purge(
    blobs: BlobStore, size: int
) -> None:
    data = os.urandom(size)
    blob = await blobs.put(data)
    await blobs.condemn(blob.hash)
    before = _now_ms()
    assert await blobs.put(data) == blob
    assert (await _live(blobs))[blob.hash] >= before - SLACK_MS
    await blobs.purge(blob.hash, condemned_before=_now_ms())
    assert await blobs.get(blob.hash) == data
    assert blob.hash in await _live(blobs)
    assert blob.hash not in await _condemned(blobs)


@pytest.mark.parametrize("size", [100, 128 * 1024 + 1])
async def test_restore_makes_a_condemned_blob_live(blobs: BlobStore, size: int) -> None:
    data = os.urandom(size)
    blob = await blobs.put(data)
    await blobs.condemn(blob.hash)
    before = _now_ms()
    await blobs.restore(blob.hash)
    live = await _live(blobs)
    assert live[blob.hash] >= before - SLACK_MS  # dated as restored: not old again at once
    assert blob.hash not in await _condemned(blobs)
    assert not await blobs.purge(blob.hash, condemned_before=_now_ms())
    assert await blobs.get(blob.hash) == data
    await blobs.restore(blob.hash)  # not condemned: nothing to do
    await blobs.restore("e" * 64)  # no such blob: nothing to do
    assert await blobs.get(blob.hash) == data


async def test_purge_and_condemn_leave_what_they_do_not_own(blobs: BlobStore) -> None:
    live = await blobs.put(b"live")
    assert not await blobs.purge(live.hash, condemned_before=_now_ms() + 60_000)
    assert await blobs.get(live.hash) == b"live"
    await blobs.condemn("d" * 64)  # no such blob
    assert await _condemned(blobs) == {}
    await blobs.condemn(live.hash)
    await blobs.condemn(live.hash)  # twice is once
    assert list(await _condemned(blobs)) == [live.hash]
    await blobs.delete(live.hash)  # delete takes the condemned copy too
    assert not await blobs.exists(live.hash)
    assert await _condemned(blobs) == {}
