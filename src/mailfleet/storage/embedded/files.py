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

The lifecycle (decision 0018): a condemned pack row keeps its data with a
``condemned_at`` time, a condemned file moves to ``ROOT/trash/<hash>`` (its
mtime set to the time it was condemned). Reads still find both; a put does
not (a pack row is made live again by the same upsert that inserts it, a
file is written afresh), so a blob put after it was condemned is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.errors import (
    BackendUnavailable,
    BlobCorrupt,
    BlobMissing,
    BlobTooLarge,
    write_failed,
)
from mailfleet.storage.interfaces import Blob, StoredBlob

# Blobs up to this size go into the pack: the raw mail of nearly every message,
# its text and HTML bodies and small attachments.
SMALL_LIMIT = 128 * 1024
_PACK_SCHEMA = "CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, data BLOB NOT NULL)"
# Added for the lifecycle; a pack from before it gets them on open, its rows
# written "at 0" (old: the sweep checks them first, and keeps what is named).
_PACK_COLUMNS = {
    "written_at": "ALTER TABLE blobs ADD COLUMN written_at INTEGER NOT NULL DEFAULT 0",
    "condemned_at": "ALTER TABLE blobs ADD COLUMN condemned_at INTEGER",
}
# Few rows are condemned at a time: the index holds only those.
_PACK_CONDEMNED_INDEX = (
    "CREATE INDEX IF NOT EXISTS blobs_condemned ON blobs (hash) WHERE condemned_at IS NOT NULL"
)
# A put of a condemned blob makes it live: the same statement as a plain
# insert, and the update runs only on that rare conflict.
_PACK_PUT = (
    "INSERT INTO blobs (hash, data, written_at) VALUES (?, ?, ?)"
    " ON CONFLICT (hash) DO UPDATE SET condemned_at = NULL, written_at = excluded.written_at"
    " WHERE condemned_at IS NOT NULL"
)


def _verify(blob_hash: str, digest: hashlib._Hash) -> None:
    if digest.hexdigest() != blob_hash:
        raise BlobCorrupt(f"{blob_hash}: stored bytes do not hash to their name")


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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _mtime_ms(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return None


def _fanout(name: str) -> bool:
    return len(name) == 2 and all(c in "0123456789abcdef" for c in name)


def _merge(pack: list[StoredBlob], files: list[StoredBlob], limit: int) -> list[StoredBlob]:
    """Both listings in hash order; a blob in both (a small stream is a file)
    once, at the later of its times."""
    found: dict[str, int] = {}
    for blob in (*pack, *files):
        found[blob.hash] = max(found.get(blob.hash, blob.at), blob.at)
    return [StoredBlob(h, found[h]) for h in sorted(found)[:limit]]


class FileBlobStore:
    def __init__(self, root: Path, *, small_limit: int = SMALL_LIMIT) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.trash = root / "trash"
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
        self.trash.mkdir(exist_ok=True)
        conn = sqlite3.connect(self.pack_path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(_PACK_SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}
            for column, statement in _PACK_COLUMNS.items():
                if column not in have:
                    try:
                        conn.execute(statement)
                    except sqlite3.OperationalError as exc:
                        # Another process (worker-in's) opening the same
                        # pack added it first.
                        if "duplicate column" not in str(exc):
                            raise
            conn.execute(_PACK_CONDEMNED_INDEX)
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
        for path in (self.path(blob_hash), self.trash / blob_hash):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BackendUnavailable(f"cannot read blob: {exc}") from exc
        raise BlobMissing(blob_hash)

    def _exists_sync(self, blob_hash: str) -> bool:
        if not _valid_hash(blob_hash):
            return False
        return (
            self._small_get(blob_hash) is not None
            or self.path(blob_hash).exists()
            or (self.trash / blob_hash).exists()
        )

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
            raise write_failed("cannot write blob", exc) from exc
        return Blob(blob_hash, len(data))

    async def put(self, data: bytes) -> Blob:
        if len(data) > self.small_limit:
            return await asyncio.to_thread(self._put_sync, data)
        data = bytes(data)
        blob_hash = hashlib.sha256(data).hexdigest()
        written_at = _now_ms()

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(_PACK_PUT, (blob_hash, data, written_at))

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
                raise write_failed("cannot write blob", exc) from exc
            raise
        return Blob(blob_hash, size)

    async def get(self, blob_hash: str) -> bytes:
        self.path(blob_hash)  # validates the name
        # Most bodies are small: one primary-key read in the pack, done right
        # here like the mailbox reads (decision 0013); files go to a thread.
        data = self._small_get(blob_hash)
        if data is None:
            data = await asyncio.to_thread(self._read_file, blob_hash)
        # As the S3 store does (decision 0015): a disk or a hand that changed
        # the bytes must not pass them off as the blob.
        _verify(blob_hash, hashlib.sha256(data))
        return data

    async def stream(self, blob_hash: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        path = self.path(blob_hash)
        small = self._small_get(blob_hash)
        if small is not None:
            _verify(blob_hash, hashlib.sha256(small))
            for start in range(0, len(small), chunk_size):
                yield small[start : start + chunk_size]
            return
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            try:
                f = await asyncio.to_thread(open, self.trash / blob_hash, "rb")
            except FileNotFoundError:
                raise BlobMissing(blob_hash) from None
        digest = hashlib.sha256()
        # One chunk is held back until the next arrives, so that a corrupt
        # blob fails before its last chunk: a reader never sees it end well.
        held: bytes | None = None
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                digest.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        finally:
            f.close()
        _verify(blob_hash, digest)
        if held is not None:
            yield held

    async def exists(self, blob_hash: str) -> bool:
        return await asyncio.to_thread(self._exists_sync, blob_hash)

    async def delete(self, blob_hash: str) -> None:
        path = self.path(blob_hash)

        def remove(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM blobs WHERE hash = ?", (blob_hash,))

        await self._writer.run(remove)
        await asyncio.to_thread(path.unlink, True)
        await asyncio.to_thread((self.trash / blob_hash).unlink, True)

    # -- lifecycle (decision 0018) -------------------------------------------------

    def _pack_list(self, condemned: bool, after: str, limit: int) -> list[StoredBlob]:
        if condemned:
            sql = (
                "SELECT hash, condemned_at FROM blobs WHERE condemned_at IS NOT NULL"
                " AND hash > ? ORDER BY hash LIMIT ?"
            )
        else:
            sql = (
                "SELECT hash, written_at FROM blobs WHERE condemned_at IS NULL"
                " AND hash > ? ORDER BY hash LIMIT ?"
            )
        try:
            rows = self._reader().execute(sql, (after, limit)).fetchall()
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot read blob pack: {exc}") from exc
        return [StoredBlob(h, int(at)) for h, at in rows]

    def _live_files(self, after: str) -> Iterator[Path]:
        """Blob files above ``after`` in hash order, walking only the fan-out
        directories that can hold them."""
        for top in sorted(p for p in self.root.iterdir() if _fanout(p.name)):
            if top.name < after[:2]:
                continue
            for sub in sorted(p for p in top.iterdir() if _fanout(p.name)):
                if top.name + sub.name < after[:4]:
                    continue
                for path in sorted(sub.iterdir()):
                    if path.name > after and _valid_hash(path.name):
                        yield path

    def _file_list(self, paths: Iterator[Path], limit: int) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        for path in paths:
            at = _mtime_ms(path)
            if at is not None:
                found.append(StoredBlob(path.name, at))
            if len(found) >= limit:
                break
        return found

    def _list_sync(self, condemned: bool, after: str, limit: int) -> list[StoredBlob]:
        if condemned:
            names = sorted(p for p in self.trash.iterdir() if p.name > after)
            files = self._file_list(iter(names), limit)
        else:
            files = self._file_list(self._live_files(after), limit)
        return _merge(self._pack_list(condemned, after, limit), files, limit)

    async def list_blobs(self, *, after: str, limit: int) -> list[StoredBlob]:
        return await asyncio.to_thread(self._list_sync, False, after, limit)

    async def list_condemned(self, *, after: str, limit: int) -> list[StoredBlob]:
        return await asyncio.to_thread(self._list_sync, True, after, limit)

    def _condemn_file(self, blob_hash: str, now: int) -> None:
        live = self.path(blob_hash)
        try:
            # Stamped before the move: the trash copy is never seen with the
            # time it was written, which would make it look condemned long ago.
            os.utime(live, ns=(now * 1_000_000, now * 1_000_000))
            os.replace(live, self.trash / blob_hash)
        except FileNotFoundError:
            return

    async def condemn(self, blob_hash: str) -> None:
        self.path(blob_hash)  # validates the name
        now = _now_ms()

        def mark(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE blobs SET condemned_at = ? WHERE hash = ? AND condemned_at IS NULL",
                (now, blob_hash),
            )

        await self._writer.run(mark)
        await asyncio.to_thread(self._condemn_file, blob_hash, now)

    def _restore_file(self, blob_hash: str, now: int) -> None:
        condemned = self.trash / blob_hash
        if not condemned.exists():
            return
        live = self.path(blob_hash)
        if live.exists():  # put again meanwhile
            condemned.unlink(missing_ok=True)
            return
        live.parent.mkdir(parents=True, exist_ok=True)
        os.utime(condemned, ns=(now * 1_000_000, now * 1_000_000))
        os.replace(condemned, live)

    async def restore(self, blob_hash: str) -> None:
        self.path(blob_hash)
        now = _now_ms()

        def unmark(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE blobs SET condemned_at = NULL, written_at = ?"
                " WHERE hash = ? AND condemned_at IS NOT NULL",
                (now, blob_hash),
            )

        await self._writer.run(unmark)
        await asyncio.to_thread(self._restore_file, blob_hash, now)

    def _purge_file(self, blob_hash: str, condemned_before: int) -> bool:
        condemned = self.trash / blob_hash
        at = _mtime_ms(condemned)
        if at is None or at > condemned_before:
            return False
        condemned.unlink(missing_ok=True)
        return True

    async def purge(self, blob_hash: str, *, condemned_before: int) -> bool:
        self.path(blob_hash)

        def remove(conn: sqlite3.Connection) -> int:
            # One statement on the writer thread: a put that revives the row
            # commits before or after it, never in between.
            return conn.execute(
                "DELETE FROM blobs WHERE hash = ? AND condemned_at IS NOT NULL"
                " AND condemned_at <= ?",
                (blob_hash, condemned_before),
            ).rowcount

        from_pack = await self._writer.run(remove)
        from_files = await asyncio.to_thread(self._purge_file, blob_hash, condemned_before)
        return from_pack > 0 or from_files
