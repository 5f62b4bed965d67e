"""An S3 server for the tests: moto's S3 API (``moto[server]``, a real S3
HTTP API keeping its data in memory, served by ``mailfleet.loopback_s3``) on a
free loopback port, one per test session,
and S3 blob stores on buckets of their own, emptied and deleted after use.

The server starts on first use, from a fixture or a contract factory (those
take no fixtures), and stops at the end of the session: the ``s3_server``
fixture's teardown, or the interpreter's exit when no test asked for the
fixture. moto missing: skipped, or failed in CI (``tools.missing``)."""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from mailfleet import loopback_s3
from mailfleet.storage.distributed.s3_blobs import S3BlobStore, S3Location
from tests.support.tools import missing

REGION = "us-east-1"
KEY_ID = "mailfleet-test"
SECRET = "mailfleet-test-secret"
# moto refuses parts under this (S3: 5 MiB) but the last. Scaled down so that
# the contract suite's blobs of a few hundred KiB go as several parts and
# still meet the rule, as a 25 MB attachment does on S3.
TEST_PART_SIZE = 64 * 1024
INSTALL = "pip install 'moto[server]' (it is in the dev extra: scripts/bootstrap)"


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_running: S3Server | None = None


def _moto_installed() -> bool:
    try:
        import moto  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start() -> S3Server:
    if not _moto_installed():
        missing(f"moto is missing: {INSTALL}")
    port = _free_port()
    env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(TEST_PART_SIZE)}
    process = subprocess.Popen(
        loopback_s3.command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = S3Server(process, port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            missing(f"the S3 server (moto) exited with {process.returncode} on start: {INSTALL}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    pytest.fail("the S3 server (moto) did not listen within 20 s", pytrace=False)


def shared_s3_server() -> S3Server:
    """The session's server, started on first use."""
    global _running
    if _running is None or _running.process.poll() is not None:
        _running = _start()
        atexit.register(_running.stop)
    return _running


def running_s3_endpoint() -> str | None:
    if _running is None or _running.process.poll() is not None:
        return None
    return _running.endpoint


def stop_shared_s3_server() -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    yield shared_s3_server()
    stop_shared_s3_server()


def location_for(
    server: S3Server,
    bucket: str,
    *,
    prefix: str = "blobs",
    part_size: int = TEST_PART_SIZE,
    multipart_threshold: int = 2 * TEST_PART_SIZE,
) -> S3Location:
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint=server.endpoint,
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        part_size=part_size,
        multipart_threshold=multipart_threshold,
    )


@asynccontextmanager
async def s3_blob_store(
    store_class: type[S3BlobStore] = S3BlobStore, **location: int | str
) -> AsyncIterator[S3BlobStore]:
    """An opened store of ``store_class`` on a new bucket of its own; the
    bucket is emptied (objects and unfinished uploads) and deleted on exit."""
    server = shared_s3_server()
    bucket = f"mf-test-{secrets.token_hex(8)}"
    store = store_class(location_for(server, bucket, **location))  # type: ignore[arg-type]
    await store.open()
    try:
        await store.s3.create_bucket(Bucket=bucket)
        yield store
    finally:
        try:
            await empty_and_delete_bucket(store, bucket)
        finally:
            await store.close()


async def empty_and_delete_bucket(store: S3BlobStore, bucket: str) -> None:
    s3 = store.s3
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    for upload in uploads.get("Uploads", []):
        await s3.abort_multipart_upload(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            await s3.delete_object(Bucket=bucket, Key=item["Key"])
    await s3.delete_bucket(Bucket=bucket)
