"""Put and get latency of the two S3 clients considered for the blob store
(decision 0015): obstore (Rust) and aiobotocore, against moto's S3 server on
loopback, for a 4 KiB and a 1 MiB object, one request at a time.

Both send the object's SHA-256 with the write (what the blob store does), and
read the whole object back. moto is a Python server, so the figures are the
client's cost plus moto's: the difference between the clients is what counts.

    .venv/bin/pip install obstore   # not a dependency: only this comparison uses it
    .venv/bin/python bench/s3_clients.py --iterations 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable

from aiobotocore.session import get_session
from botocore.config import Config

KEY_ID, SECRET, REGION = "bench", "bench", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto_server did not start")


async def _timed(op: Callable[[], Awaitable[object]], iterations: int) -> tuple[float, float]:
    for _ in range(10):  # warm-up: connections, first-request caches
        await op()
    laps = []
    for _ in range(iterations):
        start = time.perf_counter()
        await op()
        laps.append((time.perf_counter() - start) * 1000)
    laps.sort()
    return statistics.median(laps), laps[int(len(laps) * 0.99) - 1]


async def _aiobotocore(endpoint: str, bucket: str, data: bytes, n: int) -> dict[str, tuple]:
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=config,
    ) as client:
        await client.create_bucket(Bucket=bucket)

        async def put() -> None:
            await client.put_object(
                Bucket=bucket,
                Key="k",
                Body=data,
                ChecksumSHA256=checksum,
                ChecksumAlgorithm="SHA256",
            )

        async def get() -> None:
            response = await client.get_object(Bucket=bucket, Key="k")
            async with response["Body"] as body:
                await body.read()

        return {"put": await _timed(put, n), "get": await _timed(get, n)}


async def _obstore(endpoint: str, bucket: str, data: bytes, n: int) -> dict[str, tuple]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        client_options={"allow_http": True},
        checksum_algorithm="sha256",
    )

    async def put() -> None:
        await obstore.put_async(store, "k", data)

    async def get() -> None:
        result = await obstore.get_async(store, "k")
        await result.bytes_async()

    return {"put": await _timed(put, n), "get": await _timed(get, n)}


async def _store(endpoint: str, bucket: str, data: bytes, n: int) -> dict[str, tuple]:
    """mailfleet's S3BlobStore: a put of new content is a HEAD (not there)
    and a PUT; its get hashes what it read."""
    from mailfleet.storage.distributed.s3_blobs import S3BlobStore, S3Location

    store = S3BlobStore(
        S3Location(
            bucket=bucket,
            endpoint=endpoint,
            region=REGION,
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
        )
    )
    await store.open()
    try:
        counter = iter(range(1 << 62))
        stored = await store.put(data)

        async def put() -> None:
            await store.put(next(counter).to_bytes(8) + data[8:])  # new content each time

        async def get() -> None:
            await store.get(stored.hash)

        return {"put": await _timed(put, n), "get": await _timed(get, n)}
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    moto = shutil.which("moto_server")
    if moto is None:
        raise SystemExit("moto_server is missing: pip install 'moto[server]'")
    port = _free_port()
    server = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is timed
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port)
        endpoint = f"http://127.0.0.1:{port}"
        print(
            f"{'client':12} {'size':>8} {'put p50':>9} {'put p99':>9} {'get p50':>9} {'get p99':>9}"
        )
        for size in (4096, 1 << 20):
            data = os.urandom(size)
            runs = (("aiobotocore", _aiobotocore), ("obstore", _obstore), ("S3BlobStore", _store))
            for name, run in runs:
                # obstore does not create buckets: aiobotocore's run makes it first
                bucket = f"bench-{size}"
                figures = await run(endpoint, bucket, data, args.iterations)
                put, get = figures["put"], figures["get"]
                print(
                    f"{name:12} {size:>8} {put[0]:>8.2f}ms {put[1]:>8.2f}ms "
                    f"{get[0]:>8.2f}ms {get[1]:>8.2f}ms"
                )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
