"""Content-addressed blob directory: ``ROOT/ab/cd/abcd...`` named by sha256.

A write goes to a temporary file in ``ROOT/tmp``, is fsynced, renamed into
place and the directory fsynced, so that a blob either exists whole and
durable or not at all. File I/O runs in worker threads off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from mailfleet.storage.errors import BackendUnavailable, BlobMissing, BlobTooLarge
from mailfleet.storage.interfaces import Blob


def file_url_path(url: str) -> Path:
    if not url.startswith("file://"):
        raise ValueError(f"not a file URL: {url!r}")
    return Path(url[len("file://") :])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Removes a partial write; the failure that made it partial is what counts."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _valid_hash(blob_hash: str) -> bool:
    return len(blob_hash) == 64 and all(c in "0123456789abcdef" for c in blob_hash)


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    async def open(self) -> None:
        await asyncio.to_thread(self.tmp.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.tmp, os.W_OK):
            raise BackendUnavailable(f"blob directory {self.tmp} is not writable")

    def path(self, blob_hash: str) -> Path:
        if not _valid_hash(blob_hash):
            raise BlobMissing(blob_hash)
        return self.root / blob_hash[:2] / blob_hash[2:4] / blob_hash

    def _install(self, tmp_path: Path, blob_hash: str) -> None:
        final = self.path(blob_hash)
        if final.exists():  # same content already stored: keep the first
            tmp_path.unlink()
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)

    def _put_sync(self, data: bytes) -> Blob:
        blob_hash = hashlib.sha256(data).hexdigest()
        if self.path(blob_hash).exists():
            return Blob(blob_hash, len(data))
        tmp_path = self.tmp / secrets.token_hex(16)
        try:
            with open(tmp_path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._install(tmp_path, blob_hash)
        except OSError as exc:
            _discard(tmp_path)
            raise BackendUnavailable(f"cannot write blob: {exc}") from exc
        return Blob(blob_hash, len(data))

    async def put(self, data: bytes) -> Blob:
        return await asyncio.to_thread(self._put_sync, data)

    async def put_stream(self, chunks: AsyncIterator[bytes], max_size: int) -> Blob:
        tmp_path = self.tmp / secrets.token_hex(16)
        digest = hashlib.sha256()
        size = 0
        try:
            f = await asyncio.to_thread(open, tmp_path, "wb")
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise BlobTooLarge(f"over {max_size} bytes")
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(f.flush)
                await asyncio.to_thread(os.fsync, f.fileno())
            finally:
                await asyncio.to_thread(f.close)
            blob_hash = digest.hexdigest()
            await asyncio.to_thread(self._install, tmp_path, blob_hash)
        except BaseException as exc:
            await asyncio.to_thread(_discard, tmp_path)
            if isinstance(exc, OSError):
                raise BackendUnavailable(f"cannot write blob: {exc}") from exc
            raise
        return Blob(blob_hash, size)

    async def get(self, blob_hash: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(blob_hash).read_bytes)
        except FileNotFoundError:
            raise BlobMissing(blob_hash) from None
        except OSError as exc:
            raise BackendUnavailable(f"cannot read blob: {exc}") from exc

    async def stream(self, blob_hash: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(open, self.path(blob_hash), "rb")
        except FileNotFoundError:
            raise BlobMissing(blob_hash) from None
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk
        finally:
            f.close()

    async def exists(self, blob_hash: str) -> bool:
        return await asyncio.to_thread(self.path(blob_hash).exists)

    async def delete(self, blob_hash: str) -> None:
        await asyncio.to_thread(self.path(blob_hash).unlink, True)
