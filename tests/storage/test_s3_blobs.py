"""The S3 blob store's own behaviour, beyond the blob contract
(``tests/contract/test_blobs.py``): its URL, its keys, what goes on the wire
(checksums on every object and part, nothing for a blob already there,
about one part in memory), multipart uploads aborted on every failure, and
corruption refused on the way in and on the way out. Against moto's S3
server (``tests/support/s3.py``)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailfleet.config import load_settings
from mailfleet.storage.distributed.s3_blobs import MIB, S3BlobStore, S3Location
from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.errors import BackendUnavailable, BlobCorrupt, BlobMissing, BlobTooLarge
from mailfleet.storage.factory import blob_store
from tests.support.s3 import TEST_PART_SIZE, s3_blob_store
from tests.support.s3 import s3_server as s3_server  # the session's server, stopped at its end

# Parts bigger than one request's body in the tests below: the store's
# multipart path starts past two parts' worth (``s3_blob_store``'s default).
LARGE = 3 * TEST_PART_SIZE + 123

pytestmark = pytest.mark.usefixtures("s3_server")


@pytest.fixture
async def store() -> AsyncIterator[S3BlobStore]:
    async with s3_blob_store() as opened:
        yield opened


class WireLog:
    """Every PutObject and UploadPart request as sent, signed: botocore's own
    hook for the requests aiobotocore sends, and the signed requests' own
    ``prepare`` for the small PUTs of the mail path (s3_signed.py)."""

    def __init__(self, store: S3BlobStore) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        store.s3.meta.events.register("before-send.s3.PutObject", self._record)
        store.s3.meta.events.register("before-send.s3.UploadPart", self._record)
        signed = store.signed
        assert signed is not None
        prepare = signed.prepare

        async def recorded(method: str, key: str, **kwargs: Any) -> Any:
            request = await prepare(method, key, **kwargs)
            if method == "PUT":
                self._record(request)
            return request

        signed.prepare = recorded  # type: ignore[method-assign]

    def _record(self, request: Any, **_: Any) -> None:
        body = request.body
        data = bytes(body) if isinstance(body, bytes | bytearray) else body.getvalue()
        name = "part" if "partNumber=" in request.url else "object"
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        self.requests.append((name, headers, data))


async def _keys(store: S3BlobStore) -> list[str]:
    listed = await store.s3.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


async def _open_uploads(store: S3BlobStore) -> list[str]:
    listed = await store.s3.list_multipart_uploads(Bucket=store.bucket)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- the URL and the wiring ------------------------------------------------------


def test_url_names_bucket_prefix_endpoint_and_credentials() -> None:
    location = S3Location.from_url(
        "s3://mail/blobs/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1"
        "&access_key_id=AK&secret_access_key=S%2Fx&part_size=6291456&multipart_threshold=1000"
    )
    assert location == S3Location(
        bucket="mail",
        prefix="blobs/eu",
        endpoint="http://127.0.0.1:9000",
        region="eu-west-1",
        access_key_id="AK",
        secret_access_key="S/x",
        part_size=6 * MIB,
        multipart_threshold=1000,
        addressing="path",
        attempts=3,
    )
    on_aws = S3Location.from_url("s3://mail")
    # No keys in the URL: botocore's chain (AWS_ACCESS_KEY_ID and friends).
    assert (on_aws.prefix, on_aws.endpoint, on_aws.access_key_id) == ("", None, None)
    assert on_aws.addressing == "virtual"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///x", "not an s3://"),
        ("s3:///prefix", "not an s3://"),
        ("s3://b?colour=red", "unknown parameters"),
        ("s3://b?part_size=1024", "minimum"),
        ("s3://b?addressing=sideways", "addressing"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Location.from_url(url)


def test_configuration_selects_the_store_by_scheme(tmp_path: Path) -> None:
    url = "s3://mail/blobs?endpoint=http://127.0.0.1:9000&region=us-east-1"
    settings = load_settings(None, {"data_dir": str(tmp_path), "storage": {"blob_url": url}})
    store = blob_store(settings.storage_url("blob_url"))
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.location.prefix) == ("mail", "blobs")
    assert isinstance(blob_store(f"file://{tmp_path}"), FileBlobStore)


# -- keys and idempotence ------------------------------------------------------------


async def test_keys_are_prefix_fanout_and_content_hash(store: S3BlobStore) -> None:
    small, large = await store.put(b"small"), await store.put(os.urandom(LARGE))
    assert await _keys(store) == sorted(
        f"blobs/{h[:2]}/{h[2:4]}/{h}" for h in (small.hash, large.hash)
    )


async def test_a_blob_already_there_is_not_uploaded_again(store: S3BlobStore) -> None:
    """A large blob already there is not sent again (a HEAD finds it); a
    small one is one conditional PUT, which the server refuses with 412
    rather than overwrite (decision 0015: cheaper than asking first)."""
    wire = WireLog(store)
    small, large = b"once" * 100, os.urandom(LARGE)
    await store.put(small)
    await store.put(large)
    sent = len(wire.requests)
    assert await store.put(small) == await store.put_stream(_chunks(small, 7), 1 << 20)
    again = wire.requests[sent:]
    assert [(name, headers["if-none-match"]) for name, headers, _ in again] == [
        ("object", "*"),
        ("object", "*"),
    ]
    sent = len(wire.requests)
    await store.put(large)
    assert len(wire.requests) == sent
    # A stream past the threshold cannot know its name before its end: it is
    # staged, then dropped instead of copied, and leaves one object.
    await store.put_stream(_chunks(large, 4096), 1 << 20)
    assert await _keys(store) == sorted(
        f"blobs/{h[:2]}/{h[2:4]}/{h}"
        for h in (hashlib.sha256(small).hexdigest(), hashlib.sha256(large).hexdigest())
    )


# -- checksums on the wire, corruption refused ------------------------------------------


async def test_every_object_and_part_carries_its_sha256(store: S3BlobStore) -> None:
    wire = WireLog(store)
    await store.put(b"a small one")
    await store.put(os.urandom(LARGE))
    await store.put_stream(_chunks(os.urandom(LARGE), 10_000), 1 << 20)
    kinds = [name for name, _, _ in wire.requests]
    assert kinds.count("object") == 1
    assert kinds.count("part") == 8  # 4 parts each
    for _, headers, body in wire.requests:
        assert headers["x-amz-checksum-sha256"] == _b64_sha256(body)
        assert headers["x-amz-sdk-checksum-algorithm"] == "SHA256"


class BodyChangedOnTheWay(S3BlobStore):
    """Flips a byte of every body after its checksums were taken."""

    def _wire_body(self, body: bytes) -> bytes:
        return bytes([body[0] ^ 1]) + body[1:]


@pytest.mark.parametrize("size", [100, LARGE])
async def test_a_body_changed_on_the_way_is_refused(size: int) -> None:
    data = os.urandom(size)
    async with s3_blob_store(BodyChangedOnTheWay) as store:
        with pytest.raises(BlobCorrupt):
            await store.put(data)
        with pytest.raises(BlobCorrupt):
            await store.put_stream(_chunks(data, 8192), 1 << 20)
        assert not await store.exists(hashlib.sha256(data).hexdigest())
        assert await _keys(store) == []
        assert await _open_uploads(store) == []


@pytest.mark.xfail(
    strict=True,
    reason="moto 5.2 stores whatever x-amz-checksum-sha256 it is sent without checking it;"
    " AWS S3, MinIO and Ceph answer BadDigest (decision 0015)",
)
async def test_the_server_refuses_a_wrong_checksum(store: S3BlobStore) -> None:
    data = b"the body is right, its checksum is not"
    key = store.key(hashlib.sha256(data).hexdigest())
    with pytest.raises(BlobCorrupt):
        await store._put_object(key, data, _b64_sha256(b"other"), create_only=True)


async def test_a_corrupt_object_is_refused_on_read(store: S3BlobStore) -> None:
    data = os.urandom(200_000)
    blob_hash = hashlib.sha256(data).hexdigest()
    stored = data[:-1] + bytes([data[-1] ^ 1])
    await store.s3.put_object(Bucket=store.bucket, Key=store.key(blob_hash), Body=stored)
    with pytest.raises(BlobCorrupt):
        await store.get(blob_hash)
    received = bytearray()

    async def read_all() -> None:
        async for chunk in store.stream(blob_hash, chunk_size=65536):
            received.extend(chunk)

    with pytest.raises(BlobCorrupt):
        await read_all()
    assert 0 < len(received) < len(data)  # the reader never saw it end


# -- multipart: memory, abort ------------------------------------------------------------


class PartLog(S3BlobStore):
    def __init__(self, location: S3Location) -> None:
        super().__init__(location)
        self.pulled = 0
        self.part_sizes: list[int] = []
        self.held_at_send: list[int] = []

    async def _put_part(self, key: str, upload_id: str, number: int, body: bytes) -> Any:
        self.part_sizes.append(len(body))
        self.held_at_send.append(self.pulled - sum(self.part_sizes[:-1]))
        return await super()._put_part(key, upload_id, number, body)


async def test_a_25_mb_stream_holds_one_part_at_a_time() -> None:
    chunk = os.urandom(64 * 1024)
    count = 25 * 1000 * 1000 // len(chunk) + 1
    async with s3_blob_store(PartLog, part_size=5 * MIB, multipart_threshold=5 * MIB) as store:
        assert isinstance(store, PartLog)

        async def attachment() -> AsyncIterator[bytes]:
            for _ in range(count):
                store.pulled += len(chunk)
                yield chunk

        blob = await store.put_stream(attachment(), max_size=30 * 1000 * 1000)
        assert blob.size == count * len(chunk)
        assert store.part_sizes == [5 * MIB] * 4 + [blob.size - 20 * MIB]
        # Bytes read from the stream and not yet sent: one part and a chunk.
        assert max(store.held_at_send) <= 5 * MIB + len(chunk)
        digest = hashlib.sha256()
        async for piece in store.stream(blob.hash):
            digest.update(piece)
        assert digest.hexdigest() == blob.hash == hashlib.sha256(chunk * count).hexdigest()
        assert await _open_uploads(store) == []


async def test_past_max_size_the_upload_is_aborted(store: S3BlobStore) -> None:
    data = os.urandom(5 * TEST_PART_SIZE)
    with pytest.raises(BlobTooLarge):
        await store.put_stream(_chunks(data, 10_000), max_size=len(data) - 1)
    assert await _open_uploads(store) == []
    assert await _keys(store) == []


async def test_a_failing_source_aborts_the_upload(store: S3BlobStore) -> None:
    async def cut_off() -> AsyncIterator[bytes]:
        yield os.urandom(4 * TEST_PART_SIZE)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(cut_off(), max_size=1 << 30)
    assert await _open_uploads(store) == []
    assert await _keys(store) == []


class ThirdPartyFails(S3BlobStore):
    async def _put_part(self, key: str, upload_id: str, number: int, body: bytes) -> Any:
        if number == 3:
            raise BackendUnavailable("S3 part 3 failed: connection reset")
        return await super()._put_part(key, upload_id, number, body)


async def test_a_failing_part_aborts_the_upload() -> None:
    data = os.urandom(LARGE)
    async with s3_blob_store(ThirdPartyFails) as store:
        with pytest.raises(BackendUnavailable):
            await store.put(data)
        with pytest.raises(BackendUnavailable):
            await store.put_stream(_chunks(data, 10_000), 1 << 20)
        assert await _open_uploads(store) == []
        assert await _keys(store) == []


# -- the server away -----------------------------------------------------------------------


async def test_an_unreachable_server_is_backend_unavailable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = S3BlobStore(
        S3Location(
            bucket="gone",
            endpoint=f"http://127.0.0.1:{port}",
            region="us-east-1",
            access_key_id="k",
            secret_access_key="s",
            attempts=1,
        )
    )
    await store.open()
    try:
        with pytest.raises(BackendUnavailable):
            await store.ping()
        with pytest.raises(BackendUnavailable):
            await store.put(b"x")
        with pytest.raises(BackendUnavailable):
            await store.get("0" * 64)
    finally:
        await store.close()


# -- the mail path's own signed requests (s3_signed.py) --------------------------------------


def _sigv4_is_valid(method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
    """AWS Signature Version 4 checked by its specification (hmac, not
    botocore, which signed it): moto does not check signatures, AWS does."""
    import hmac
    from urllib.parse import urlsplit

    from tests.support.s3 import KEY_ID, REGION, SECRET

    auth = headers["authorization"]
    scheme, _, rest = auth.partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    fields = dict(item.strip().split("=", 1) for item in rest.split(","))
    key_id, date, region, service, terminal = fields["Credential"].split("/")
    assert (key_id, region, service, terminal) == (KEY_ID, REGION, "s3", "aws4_request")
    signed = fields["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed)
    if method == "PUT":
        assert {"x-amz-checksum-sha256", "if-none-match"} <= set(signed)
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    parts = urlsplit(url)
    lines = {**headers, "host": parts.netloc}
    canonical = "\n".join(
        [
            method,
            parts.path,
            parts.query,
            "".join(f"{name}:{lines[name].strip()}\n" for name in signed),
            ";".join(signed),
            headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{SECRET}".encode()
    for step in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, step.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["Signature"])


async def test_small_puts_and_reads_are_single_signed_requests(store: S3BlobStore) -> None:
    """A small blob's PUT and a whole blob's GET, the mail path's requests,
    skip aiobotocore (2 ms of CPU each): each is one request whose SigV4
    signature covers the body's SHA-256, its checksum and its condition."""
    assert store.signed is not None
    seen: list[tuple[str, str, dict[str, str], bytes]] = []
    prepare = store.signed.prepare

    async def recorded(method: str, key: str, **kwargs: Any) -> Any:
        request = await prepare(method, key, **kwargs)
        headers = {k.lower(): str(v) for k, v in request.headers.items()}
        seen.append((method, request.url, headers, bytes(request.body or b"")))
        return request

    store.signed.prepare = recorded  # type: ignore[method-assign]
    botocore_sent: list[str] = []
    store.s3.meta.events.register(
        "before-send.s3", lambda request, **_: botocore_sent.append(request.url)
    )
    data = b"a mail of a few lines\r\n" * 50
    blob = await store.put(data)
    assert await store.get(blob.hash) == data
    assert await store.put(data) == blob  # 412: already there, nothing overwritten
    assert botocore_sent == []
    assert [method for method, *_ in seen] == ["PUT", "GET", "PUT"]
    for method, url, headers, body in seen:
        assert url.endswith(store.key(blob.hash))
        assert _sigv4_is_valid(method, url, headers, body)
    with pytest.raises(BlobMissing):
        await store.get(hashlib.sha256(b"never stored").hexdigest())
