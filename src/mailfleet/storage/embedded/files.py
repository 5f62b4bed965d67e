"""Content-addressed blob directory: ``ROOT/ab/cd/abcd...`` named by sha256,
with small blobs packed into one SQLite file (decision 0004).

A large write goes to a temporary file in ``ROOT/tmp``, is fsynced, renamed
into place and the directory fsynced, so that a blob either exists whole and
durable or not at all. A write of at most ``small_limit`` bytes (most mail)
is a row of ``ROOT/small.sqlite`` instead, written by one thread that commits
the writes of concurrent callers together (``SqliteWriter``, WAL,
``synchronous=FULL``): one fsync for a whole batch of SMTP sessions instead of
two per blob. Readers look in the pack first, then in the directory. File and
pack I/O run in worker threads off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.errors import BackendUnavailable, BlobMissing, BlobTooLarge
from mailfleet.storage.interfaces import Blob

# Blobs up to this size go into the pack: the raw mail of nearly every message,
# its text and HTML bodies and small attachments.
SMALL_LIMIT = 128 * 1024
_PACK_SCHEMA = "CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, data BLOB NOT NULL)"


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
    def __init__(self, root: Path, *, small_limit: int = SMALL_LIMIT) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.small_limit = small_limit
        self.pack_path = root / "small.sqlite"
        self._writer = SqliteWriter(self.pack_path)
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        self._writer.start()

    def _open_sync(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.pack_path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_PACK_SCHEMA)
        finally:
            conn.close()

    async def close(self) -> None:
        await self._writer.stop()
        with self._readers_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._readers = threading.local()

    def _reader(self) -> sqlite3.Connection:
        """This worker thread's read connection to the pack."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.pack_path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            self._readers.conn = conn
            with self._readers_lock:
                self._reader_conns.append(conn)
        return conn

    def _small_get(self, blob_hash: str) -> bytes | None:
        try:
            row = (
                self._reader()
                .execute("SELECT data FROM blobs WHERE hash = ?", (blob_hash,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot read blob pack: {exc}") from exc
        return None if row is None else bytes(row[0])

    def _read_file(self, blob_hash: str) -> bytes:
        try:
            return self.path(blob_hash).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(blob_hash) from None
        except OSError as exc:
            raise BackendUnavailable(f"cannot read blob: {exc}") from exc

    def _exists_sync(self, blob_hash: str) -> bool:
        if not _valid_hash(blob_hash):
            return False
        return self._small_get(blob_hash) is not None or self.path(blob_hash).exists()

    def _delete_sync_file(self, blob_hash: str) -> None:
        self.path(blob_hash).unlink(missing_ok=True)

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
        if len(data) > self.small_limit:
            return await asyncio.to_thread(self._put_sync, data)
        data = bytes(data)
        blob_hash = hashlib.sha256(data).hexdigest()

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?, ?)", (blob_hash, data)
            )

        # Returns once the shared commit is durable (synchronous=FULL).
        await self._writer.run(insert)
        return Blob(blob_hash, len(data))

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
        self.path(blob_hash)  # validates the name
        # Most bodies are small: one primary-key read in the pack, done right
        # here like the mailbox reads (decision 0013); files go to a thread.
        data = self._small_get(blob_hash)
        if data is not None:
            return data
        return await asyncio.to_thread(self._read_file, blob_hash)

    async def stream(self, blob_hash: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        path = self.path(blob_hash)
        small = self._small_get(blob_hash)
        if small is not None:
            for start in range(0, len(small), chunk_size):
                yield small[start : start + chunk_size]
            return
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobMissing(blob_hash) from None
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk
        finally:
            f.close()

    async def exists(self, blob_hash: str) -> bool:
        return await asyncio.to_thread(self._exists_sync, blob_hash)

    async def delete(self, blob_hash: str) -> None:
        path = self.path(blob_hash)

        def remove(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM blobs WHERE hash = ?", (blob_hash,))

        await self._writer.run(remove)
        await asyncio.to_thread(path.unlink, True)
