"""The storage profile a test server runs on, chosen by the same variable as
the contract suites: ``MAILFLEET_TEST_BACKENDS`` (``embedded`` by default,
``distributed``, or both comma-separated).

The server fixtures of ``tests/conftest.py`` are parametrized by the selected
profiles, so a test written once runs on each (its id ends in
``[embedded]`` or ``[distributed]``). On ``embedded`` the server keeps
everything in its data directory. On ``distributed`` each data directory gets
storage of its own, made here and removed when the test ends:

- a directory database and two shards on PostgreSQL, copied from the migrated
  template of ``tests/support/postgres.py``;
- a NATS JetStream stream prefix (the server creates its streams; they are
  deleted by prefix afterwards);
- a Redis key prefix for the cache and the event bus;
- a bucket on the session's moto S3 server (``tests/support/s3.py``).

Another process on the same data (``mailfleet serve`` or the CLI, started by
``tests/test_restart.py``'s helpers) must use the same storage: its URLs are
also written to ``<data dir>.storage.toml`` beside the data directory, which
those helpers pass as ``--config`` when it exists (``config_args``).

A test that can only hold on the embedded profile says why with
``@pytest.mark.embedded_only("reason")``: on ``distributed`` it is skipped
with that reason, shown in the summary, never silently."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from mailfleet.storage.distributed.s3_blobs import S3BlobStore
from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.metered import MeteredStore
from tests.support import postgres
from tests.support.nats import require_nats
from tests.support.redis import delete_keys, require_redis, with_prefix
from tests.support.s3 import (
    KEY_ID,
    REGION,
    SECRET,
    empty_and_delete_bucket,
    location_for,
    running_s3_endpoint,
    shared_s3_server,
)

PROFILES = ("embedded", "distributed")
SHARDS = ("shard0", "shard1")

T = TypeVar("T")


def selected_profiles() -> list[str]:
    raw = os.environ.get("MAILFLEET_TEST_BACKENDS", "embedded")
    chosen = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = chosen - set(PROFILES)
    if unknown:
        raise RuntimeError(f"MAILFLEET_TEST_BACKENDS: unknown {sorted(unknown)}; use {PROFILES}")
    return [p for p in PROFILES if p in chosen]


def storage_config(data_dir: Path) -> Path:
    return data_dir.with_name(f"{data_dir.name}.storage.toml")


def config_args(data_dir: Path) -> list[str]:
    """``--config`` naming the data directory's storage, when it has its own."""
    path = storage_config(data_dir)
    return ["--config", str(path)] if path.exists() else []


@dataclass
class DistributedStorage:
    """What one data directory owns on the shared servers."""

    databases: list[str]  # directory, shard0, shard1
    nats_url: str
    nats_prefix: str
    redis_url: str
    redis_prefix: str
    s3_endpoint: str
    bucket: str

    def settings(self) -> dict[str, Any]:
        directory, *shards = self.databases
        s3_query = urlencode(
            {
                "endpoint": self.s3_endpoint,
                "region": REGION,
                "access_key_id": KEY_ID,
                "secret_access_key": SECRET,
            }
        )
        return {
            "metadata_url": directory,
            "metadata_shards": [
                {"name": name, "url": url} for name, url in zip(SHARDS, shards, strict=True)
            ],
            "blob_url": f"s3://{self.bucket}/blobs?{s3_query}",
            "queue_url": f"{self.nats_url}/?prefix={self.nats_prefix}",
            "cache_url": with_prefix(self.redis_url, self.redis_prefix),
            "events_url": with_prefix(self.redis_url, self.redis_prefix),
        }

    def toml(self) -> str:
        values = self.settings()
        # TOML basic strings and JSON strings escape alike for these URLs.
        lines = ["[storage]"]
        lines += [
            f"{key} = {orjson.dumps(value).decode()}"
            for key, value in values.items()
            if isinstance(value, str)
        ]
        for shard in values["metadata_shards"]:
            lines.append("[[storage.metadata_shards]]")
            lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in shard.items()]
        return "\n".join(lines) + "\n"


class Provisioner:
    """Makes and removes the storage of data directories, for the whole
    session, on a thread with an event loop of its own: it is called from sync
    tests and from inside a test's running loop alike, and it keeps its
    connections (PostgreSQL admin, S3, NATS) open between tests, which
    saves a quarter of a second per test. Removal is not waited for: it runs
    while the next test does, and its failures are raised by ``close`` (the
    end of the session)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._failures: list[BaseException] = []
        self._s3: S3BlobStore | None = None
        self._nats: NatsClient | None = None
        self._lock = threading.Lock()
        self._next: concurrent.futures.Future[DistributedStorage] | None = None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="test-storage", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def _call(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._start())

    def provision(self) -> DistributedStorage:
        """Storage of its own for one data directory. The next one is made
        while the test runs (copying three databases takes a tenth of a
        second, and the test mostly waits on its servers meanwhile)."""
        ready, self._next = self._next, self._call(self._provision)
        if ready is None:
            ready = self._call(self._provision)
        # Missing servers raise pytest's skip or fail here, in the test.
        return ready.result()

    def release(self, storage: DistributedStorage) -> None:
        future = self._call(functools.partial(self._release, storage))
        self._pending.add(future)
        future.add_done_callback(self._released)

    def _released(self, future: concurrent.futures.Future[None]) -> None:
        self._pending.discard(future)
        if future.exception() is not None:
            self._failures.append(future.exception())  # type: ignore[arg-type]

    def close(self) -> None:
        """Waits for every removal, closes the connections, and raises the
        first removal that failed."""
        if self._loop is None:
            return
        unused, self._next = self._next, None
        if unused is not None:
            with contextlib.suppress(Exception, pytest.skip.Exception, pytest.fail.Exception):
                self.release(unused.result())
        concurrent.futures.wait(list(self._pending))
        self._call(self._disconnect).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join()
        self._loop.close()
        self._loop = None
        if self._failures:
            raise self._failures[0]

    async def _bucket_client(self) -> S3BlobStore:
        if self._s3 is None:
            # Any bucket name: the client serves bucket-level calls on every one.
            store = S3BlobStore(location_for(shared_s3_server(), "mf-test-admin"))
            await store.open()
            self._s3 = store
        return self._s3

    async def _nats_client(self, url: str) -> NatsClient:
        if self._nats is None or self._nats.is_closed:
            self._nats = await nats.connect(url, connect_timeout=2)
        return self._nats

    async def _disconnect(self) -> None:
        if self._s3 is not None:
            await self._s3.close()
            self._s3 = None
        if self._nats is not None:
            await self._nats.close()
            self._nats = None

    async def _provision(self) -> DistributedStorage:
        nats_url = await require_nats()
        redis_url = await require_redis()
        server = shared_s3_server()
        token = secrets.token_hex(5)
        bucket = f"mf-test-{token}"
        s3 = await self._bucket_client()
        await s3.s3.create_bucket(Bucket=bucket)
        try:
            databases = await postgres.create_databases(1 + len(SHARDS))
        except BaseException:
            await s3.s3.delete_bucket(Bucket=bucket)
            raise
        return DistributedStorage(
            databases=databases,
            nats_url=nats_url,
            nats_prefix=f"ts{token}",
            redis_url=redis_url,
            redis_prefix=f"ts{token}",
            s3_endpoint=server.endpoint,
            bucket=bucket,
        )

    async def _release(self, storage: DistributedStorage) -> None:
        errors: list[BaseException] = []
        steps: list[Callable[[], Awaitable[None]]] = [
            functools.partial(postgres.drop_databases, storage.databases),
            functools.partial(self._delete_streams, storage.nats_url, storage.nats_prefix),
            functools.partial(delete_keys, storage.redis_url, storage.redis_prefix),
            functools.partial(self._delete_bucket, storage),
        ]
        for step in steps:
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def _delete_streams(self, url: str, prefix: str) -> None:
        client = await self._nats_client(url)
        answer = await client.request(
            "$JS.API.STREAM.NAMES", orjson.dumps({"subject": f"{prefix}.>"}), timeout=5
        )
        for name in orjson.loads(answer.data).get("streams") or []:
            await client.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)

    async def _delete_bucket(self, storage: DistributedStorage) -> None:
        if running_s3_endpoint() != storage.s3_endpoint:
            return  # that moto server has stopped, and its buckets went with it
        await empty_and_delete_bucket(await self._bucket_client(), storage.bucket)


_provisioner = Provisioner()


def provisioner() -> Provisioner:
    return _provisioner


@dataclass
class Profile:
    """One test's profile: the storage settings of each data directory it
    starts a server (or the CLI) on."""

    name: str
    owned: dict[Path, DistributedStorage] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        return self.name == "distributed"

    def storage(self, data_dir: Path) -> dict[str, Any]:
        """The ``storage`` settings for ``data_dir`` (none on embedded: its
        defaults live in the data directory), made on first use."""
        if not self.distributed:
            return {}
        data_dir = data_dir.resolve()
        if data_dir not in self.owned:
            made = _provisioner.provision()
            self.owned[data_dir] = made
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            storage_config(data_dir).write_text(made.toml())
        return self.owned[data_dir].settings()

    def release(self) -> None:
        while self.owned:
            _, storage = self.owned.popitem()
            _provisioner.release(storage)


def backend(store: object) -> object:
    """The implementation under a runtime's store, without the metrics
    wrapper ``create_stores`` puts around each (storage/metered.py)."""
    while isinstance(store, MeteredStore):
        store = store.inner
    return store


async def stored_blobs(blobs: object) -> dict[str, int]:
    """Every object a blob store holds, by name, with its size: blobs and
    leftovers alike (temporary files, staged streams, unfinished multipart
    uploads), so that a test sees what a request added on either profile."""
    blobs = backend(blobs)
    if isinstance(blobs, S3BlobStore):
        return await _s3_objects(blobs)
    if isinstance(blobs, FileBlobStore):
        return await asyncio.to_thread(_files, blobs)
    raise TypeError(f"no listing for {type(blobs).__name__}")


async def _s3_objects(store: S3BlobStore) -> dict[str, int]:
    s3 = store.s3
    found: dict[str, int] = {}
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["Size"]
    uploads = await s3.list_multipart_uploads(Bucket=store.bucket)
    for upload in uploads.get("Uploads", []):
        found[f"unfinished upload {upload['Key']}"] = 0
    return found


def _files(store: FileBlobStore) -> dict[str, int]:
    # The small-blob pack's own files hold rows: those are listed instead.
    found = {
        str(p.relative_to(store.root)): p.stat().st_size
        for p in store.root.rglob("*")
        if p.is_file() and not p.name.startswith(store.pack_path.name)
    }
    if store.pack_path.exists():
        with contextlib.closing(sqlite3.connect(store.pack_path)) as pack:
            rows = pack.execute("SELECT hash, length(data) FROM blobs").fetchall()
        found.update((f"small/{name}", size) for name, size in rows)
    return found


async def damage_stored_blob(blobs: object, blob_hash: str, replacement: bytes | None) -> None:
    """Behind the blob store's back, as a failing disk or a careless hand
    would: the blob's stored bytes removed (``replacement`` None) or
    replaced, in the S3 bucket, the directory or the small-blob pack."""
    blobs = backend(blobs)
    if isinstance(blobs, S3BlobStore):
        key = blobs.key(blob_hash)
        if replacement is None:
            await blobs.s3.delete_object(Bucket=blobs.bucket, Key=key)
        else:
            await blobs.s3.put_object(Bucket=blobs.bucket, Key=key, Body=replacement)
        return
    if isinstance(blobs, FileBlobStore):
        await asyncio.to_thread(_damage_file_blob, blobs, blob_hash, replacement)
        return
    raise TypeError(f"no way to damage a blob of {type(blobs).__name__}")


def _damage_file_blob(store: FileBlobStore, blob_hash: str, replacement: bytes | None) -> None:
    path = store.path(blob_hash)
    if path.exists():
        if replacement is None:
            path.unlink()
        else:
            path.write_bytes(replacement)
        return
    with contextlib.closing(sqlite3.connect(store.pack_path, isolation_level=None)) as pack:
        if replacement is None:
            changed = pack.execute("DELETE FROM blobs WHERE hash = ?", (blob_hash,))
        else:
            changed = pack.execute(
                "UPDATE blobs SET data = ? WHERE hash = ?", (replacement, blob_hash)
            )
        if changed.rowcount != 1:
            raise LookupError(f"blob {blob_hash} is neither a file nor in the pack")
