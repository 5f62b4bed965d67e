"""Blobs on the S3 API (decision 0015): objects named
``PREFIX/ab/cd/<sha256>``, written once, verified on the way in and out.

Integrity, end to end:
- every PUT and every part carries ``x-amz-checksum-sha256``; a server that
  checks it (AWS S3, MinIO, Ceph) refuses a body that changed on the way;
- the server's ETag of a single PUT or a part is the MD5 of what it stored
  (unless the bucket encrypts with KMS or customer keys); it is compared too,
  which catches a changed body on a server that ignores checksums (moto);
- a streamed upload lands under a temporary key and is copied to its content
  name with the server computing the copy's SHA-256, which must equal the name;
- every read hashes what it got and refuses a blob that is not its name
  (``BlobCorrupt``), before handing out the last chunk.

Lifecycle (decision 0018): a condemned blob is moved to
``PREFIX/trash/<sha256>`` (a server-side copy carrying the time it was
condemned, then a delete of the live key). Reads fall back to it; a put does
not see it and writes the live key afresh.

Memory: ``put_stream`` holds about one part; reads go chunk by chunk off the
socket. Writes above ``multipart_threshold`` go as a multipart upload of
``part_size`` parts, aborted on any failure (or past ``max_size``) so no part
is left billed. A failure of the server is ``BackendUnavailable`` (try later).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from mailfleet.storage.distributed.s3_signed import Reply, SignedRequests
from mailfleet.storage.errors import BackendUnavailable, BlobCorrupt, BlobMissing, BlobTooLarge
from mailfleet.storage.interfaces import Blob, StoredBlob

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MIB = 1024 * 1024
# S3 refuses parts under 5 MiB (but the last); 8 MiB is the SDKs' default and
# keeps a 25 MB attachment to four parts.
MIN_PART_SIZE = 5 * MIB
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
# Up to this size a put is one conditional PUT; above it a HEAD asks first,
# so a large blob already stored (a forwarded attachment) is not sent again.
HEAD_FIRST_ABOVE = 256 * 1024
# Server-side encryption under which an ETag is still the MD5 of the content.
_ETAG_IS_MD5 = {None, "AES256"}
# Object metadata on a condemned copy: when it was condemned (ms). Listings
# carry only LastModified (whole seconds); a purge reads this exact time.
_CONDEMNED_AT = "condemned-at"
# Error codes of a body that did not match its checksum or signed hash.
_DIGEST_CODES = (
    "BadDigest",
    "InvalidDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
    "InvalidRequest",
)
# Errors of the transport below botocore that it does not wrap.
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


def _valid_hash(blob_hash: str) -> bool:
    return len(blob_hash) == 64 and all(c in "0123456789abcdef" for c in blob_hash)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _unavailable(action: str, exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"S3 {action} failed: {exc}")


@dataclass(frozen=True)
class S3Location:
    """Where the blobs live, from a URL:

    ``s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:9000&region=us-east-1``

    Query parameters, all optional: ``endpoint`` (absent: AWS), ``region``,
    ``access_key_id`` and ``secret_access_key`` (absent: the standard AWS
    environment variables and files, as every AWS tool reads them),
    ``part_size`` and ``multipart_threshold`` in bytes, ``addressing``
    (``path``, the default with an endpoint, or ``virtual``), ``attempts``
    (per request, retries included: 3)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    addressing: Literal["path", "virtual"] = "path"
    attempts: int = 3

    @classmethod
    def from_url(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname:
            raise ValueError(f"not an s3://BUCKET[/PREFIX] URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=False).items()}
        known = {
            "endpoint",
            "region",
            "access_key_id",
            "secret_access_key",
            "part_size",
            "multipart_threshold",
            "addressing",
            "attempts",
        }
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"{url!r}: unknown parameters {unknown}; expected {sorted(known)}")
        part_size = int(query.get("part_size", DEFAULT_PART_SIZE))
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"{url!r}: part_size under S3's minimum of {MIN_PART_SIZE}")
        endpoint = query.get("endpoint")
        addressing: Literal["path", "virtual"]
        match query.get("addressing", "path" if endpoint else "virtual"):
            case "path":
                addressing = "path"
            case "virtual":
                addressing = "virtual"
            case _:
                raise ValueError(f"{url!r}: addressing is 'path' or 'virtual'")
        return cls(
            bucket=parts.hostname,
            prefix=unquote(parts.path).strip("/"),
            endpoint=endpoint,
            region=query.get("region"),
            access_key_id=query.get("access_key_id"),
            secret_access_key=query.get("secret_access_key"),
            part_size=part_size,
            multipart_threshold=int(query.get("multipart_threshold", part_size)),
            addressing=addressing,
            attempts=max(1, int(query.get("attempts", 3))),
        )


_sessions = threading.local()


def _session() -> AioSession:
    """One botocore session per thread: a new one reads S3's service model
    from disk again (60 ms per store opened), a kept one has it cached.
    Per thread because botocore sessions are not made to be shared by threads."""
    session: AioSession | None = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = get_session()
    return session


class S3BlobStore:
    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.bucket = location.bucket
        self.part_size = location.part_size
        self.multipart_threshold = max(location.multipart_threshold, 1)
        self._root = f"{location.prefix}/" if location.prefix else ""
        self._exit_stack: AsyncExitStack | None = None
        self._s3: S3Client | None = None
        # The mail path's small PUTs and whole GETs (s3_signed.py); None
        # without credentials to sign with (anonymous access goes through
        # aiobotocore, which knows how).
        self.signed: SignedRequests | None = None

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        return cls(S3Location.from_url(url))

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        loc = self.location
        config = AioConfig(
            # We send our own SHA-256 (the content's name): no second checksum
            # computed by botocore, and reads are verified against the name.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # A few quick retries for a dropped connection; past them the
            # caller answers "try later" (451/503) rather than hold a client.
            retries={"total_max_attempts": loc.attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=64,
            s3={"addressing_style": loc.addressing},
        )
        stack = AsyncExitStack()
        self._s3 = await stack.enter_async_context(
            _session().create_client(
                "s3",
                endpoint_url=loc.endpoint,
                region_name=loc.region,
                aws_access_key_id=loc.access_key_id,
                aws_secret_access_key=loc.secret_access_key,
                config=config,
            )
        )
        self._exit_stack = stack
        credentials: Credentials | None
        if loc.access_key_id and loc.secret_access_key:
            credentials = Credentials(loc.access_key_id, loc.secret_access_key)
        else:
            credentials = await _session().get_credentials()
        if credentials is not None:
            signed = SignedRequests(
                endpoint=self._s3.meta.endpoint_url,
                bucket=self.bucket,
                region=self._s3.meta.region_name,
                addressing=loc.addressing,
                credentials=credentials,
                attempts=loc.attempts,
            )
            await signed.open()
            stack.push_async_callback(signed.close)
            self.signed = signed

    async def close(self) -> None:
        stack, self._exit_stack, self._s3 = self._exit_stack, None, None
        self.signed = None
        if stack is not None:
            await stack.aclose()

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            raise BackendUnavailable("S3 blob store is not open")
        return self._s3

    async def ping(self) -> None:
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable(f"bucket {self.bucket}", exc) from exc

    # -- names -------------------------------------------------------------

    def key(self, blob_hash: str) -> str:
        """The object key of a blob. Two levels of fan-out, as in the file
        store: S3 splits its index (and request rate) by key prefix, and a
        sweep can list 65,536 small ranges in parallel."""
        if not _valid_hash(blob_hash):
            raise BlobMissing(blob_hash)
        return f"{self._root}{blob_hash[:2]}/{blob_hash[2:4]}/{blob_hash}"

    def _trash_key(self, blob_hash: str) -> str:
        if not _valid_hash(blob_hash):
            raise BlobMissing(blob_hash)
        return f"{self._root}trash/{blob_hash}"

    def _upload_key(self) -> str:
        """Where a stream goes before its hash is known. A crash leaves it
        behind: the bucket's lifecycle rule expires ``tmp/`` (decision 0015)."""
        return f"{self._root}tmp/{secrets.token_hex(16)}"

    # -- writes --------------------------------------------------------------

    async def put(self, data: bytes) -> Blob:
        blob_hash = hashlib.sha256(data).hexdigest()
        blob = Blob(blob_hash, len(data))
        key = self.key(blob_hash)
        if len(data) <= min(HEAD_FIRST_ABOVE, self.multipart_threshold):
            # One request, not two: a conditional PUT answers 412 when the
            # blob is there, and sending a small body again costs less than
            # asking first (the MX's DATA path writes one new blob per mail).
            await self._put_object(key, data, _b64(bytes.fromhex(blob_hash)), create_only=True)
            return blob
        if await self._head(key):
            return blob
        if len(data) <= self.multipart_threshold:
            await self._put_object(key, data, _b64(bytes.fromhex(blob_hash)), create_only=True)
            return blob
        async with _MultipartUpload(self, key) as upload:
            for start in range(0, len(data), self.part_size):
                # botocore takes bytes, not views: one part copied at a time
                await upload.add_part(data[start : start + self.part_size])
            await upload.complete()
        return blob

    async def put_stream(self, chunks: AsyncIterator[bytes], max_size: int) -> Blob:
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise BlobTooLarge(f"over {max_size} bytes")
                digest.update(chunk)
                buffer += chunk
                if upload is None and len(buffer) > self.multipart_threshold:
                    upload = _MultipartUpload(self, self._upload_key())
                    await upload.start()
                while upload is not None and len(buffer) >= self.part_size:
                    part = bytes(buffer[: self.part_size])
                    del buffer[: self.part_size]
                    await upload.add_part(part)
            blob_hash = digest.hexdigest()
            if upload is None:
                # Small enough for one request: straight to its name.
                return await self.put(bytes(buffer))
            if buffer:
                await upload.add_part(bytes(buffer))
                buffer.clear()
            await upload.complete()
            staged, upload = upload.key, None
        except BaseException:
            if upload is not None:
                await upload.abort()
            raise
        try:
            await self._install(staged, blob_hash)
        finally:
            await self._delete_key(staged)
        return Blob(blob_hash, size)

    async def _install(self, staged: str, blob_hash: str) -> None:
        """Copies a finished upload to its content name, unless the blob is
        already there; the server computes the copy's SHA-256 as it writes."""
        key = self.key(blob_hash)
        if await self._head(key):
            return
        try:
            result = await self.s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": staged},
                ChecksumAlgorithm="SHA256",
            )
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable("copy", exc) from exc
        copied = result.get("CopyObjectResult", {}).get("ChecksumSHA256")
        # A composite value ("<base64>-<parts>") is a checksum of part
        # checksums, not of the content: nothing to compare it with.
        full_object = copied is not None and "-" not in copied
        if full_object and copied != _b64(bytes.fromhex(blob_hash)):
            await self._delete_key(key)
            raise BlobCorrupt(f"{blob_hash}: the server's copy hashes to {copied}")

    def _wire_body(self, body: bytes) -> bytes:
        """The bytes that go on the wire for a PUT or a part: ``body`` itself.
        Tests replace it to change a body after its checksums were taken, as
        a fault on the way would."""
        return body

    async def _put_object(
        self, key: str, body: bytes, sha256_b64: str, *, create_only: bool
    ) -> None:
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if self.signed is not None:
            etag, encryption = await self._signed_put(key, body, sha256_b64, create_only)
            if etag is None:
                return  # already there
        else:
            etag, encryption = await self._botocore_put(key, body, sha256_b64, create_only)
            if etag is None:
                return
        if encryption in _ETAG_IS_MD5 and etag and etag != md5:
            await self._delete_key(key)
            raise BlobCorrupt(f"{key}: the server stored other bytes (ETag {etag}, sent {md5})")

    async def _signed_put(
        self, key: str, body: bytes, sha256_b64: str, create_only: bool
    ) -> tuple[str | None, str | None]:
        """(ETag, server-side encryption), or (None, None) when a
        create-only PUT found the blob there."""
        assert self.signed is not None
        headers = {"x-amz-checksum-sha256": sha256_b64, "x-amz-sdk-checksum-algorithm": "SHA256"}
        if create_only:
            headers["If-None-Match"] = "*"
        try:
            reply = await self.signed.send(
                "PUT",
                key,
                body=self._wire_body(body),
                body_sha256=base64.b64decode(sha256_b64).hex(),
                headers=headers,
            )
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("put", exc) from exc
        if create_only and reply.status == 412:
            return None, None
        if reply.status != 200:
            raise _reply_error("put", reply)
        return reply.headers.get("etag", "").strip('"'), reply.headers.get(
            "x-amz-server-side-encryption"
        )

    async def _botocore_put(
        self, key: str, body: bytes, sha256_b64: str, create_only: bool
    ) -> tuple[str | None, str | None]:
        params: dict[str, Any] = {}
        if create_only:
            # Never overwrite: a blob that is there was written whole and
            # verified by whoever wrote it.
            params["IfNoneMatch"] = "*"
        try:
            response = await self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=self._wire_body(body),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sha256_b64,
                **params,
            )
        except ClientError as exc:
            if create_only and _status(exc) == 412:
                return None, None  # written meanwhile by a concurrent put of the same content
            raise _refused_or_unavailable("put", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("put", exc) from exc
        return response.get("ETag", "").strip('"'), response.get("ServerSideEncryption")

    async def _put_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        sha256_b64 = _b64(hashlib.sha256(body).digest())
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        try:
            response = await self.s3.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=self._wire_body(body),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sha256_b64,
            )
        except ClientError as exc:
            raise _refused_or_unavailable(f"part {number}", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(f"part {number}", exc) from exc
        etag = response.get("ETag", "").strip('"')
        if response.get("ServerSideEncryption") in _ETAG_IS_MD5 and etag and etag != md5:
            raise BlobCorrupt(f"{key} part {number}: the server stored other bytes")
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": sha256_b64}

    # -- reads ---------------------------------------------------------------

    async def _head(self, key: str) -> bool:
        return await self._head_metadata(key) is not None

    async def _head_metadata(self, key: str) -> dict[str, str] | None:
        """The object's user metadata, or None when there is no such object."""
        try:
            response = await self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise _unavailable("head", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("head", exc) from exc
        return dict(response.get("Metadata", {}))

    async def _open_body(self, blob_hash: str) -> Any:
        # The live key, else the condemned copy (still readable until purged).
        for key in (self.key(blob_hash), self._trash_key(blob_hash)):
            try:
                response = await self.s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _status(exc) == 404:
                    continue
                raise _unavailable("get", exc) from exc
            except _TRANSPORT_ERRORS as exc:
                raise _unavailable("get", exc) from exc
            return response["Body"]
        raise BlobMissing(blob_hash)

    async def get(self, blob_hash: str) -> bytes:
        if self.signed is not None:
            data = await self._signed_get(blob_hash)
        else:
            body = await self._open_body(blob_hash)
            try:
                async with body:
                    data = await body.read()
            except _TRANSPORT_ERRORS as exc:
                raise _unavailable("read", exc) from exc
        if hashlib.sha256(data).hexdigest() != blob_hash:
            raise BlobCorrupt(f"{blob_hash}: stored bytes do not hash to their name")
        return data

    async def _signed_get(self, blob_hash: str) -> bytes:
        assert self.signed is not None
        # The live key, else the condemned copy (still readable until purged).
        for key in (self.key(blob_hash), self._trash_key(blob_hash)):
            try:
                reply = await self.signed.send("GET", key)
            except _TRANSPORT_ERRORS as exc:
                raise _unavailable("get", exc) from exc
            if reply.status == 200:
                return reply.body
            if reply.status != 404:
                raise _reply_error("get", reply)
        raise BlobMissing(blob_hash)

    async def stream(self, blob_hash: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        body = await self._open_body(blob_hash)
        digest = hashlib.sha256()
        # One chunk is held back until the next arrives, so that a corrupt
        # blob fails before its last chunk: a reader never sees it end well.
        held: bytes | None = None
        async with body:
            while True:
                try:
                    chunk: bytes = await body.read(chunk_size)
                except _TRANSPORT_ERRORS as exc:
                    raise _unavailable("read", exc) from exc
                if not chunk:
                    break
                digest.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        if digest.hexdigest() != blob_hash:
            raise BlobCorrupt(f"{blob_hash}: stored bytes do not hash to their name")
        if held is not None:
            yield held

    async def exists(self, blob_hash: str) -> bool:
        if not _valid_hash(blob_hash):
            return False
        return await self._head(self.key(blob_hash)) or await self._head(self._trash_key(blob_hash))

    # -- removal -------------------------------------------------------------

    async def delete(self, blob_hash: str) -> None:
        await self._delete_key(self.key(blob_hash), quiet=False)
        await self._delete_key(self._trash_key(blob_hash), quiet=False)

    # -- lifecycle (decision 0018) --------------------------------------------

    async def _list(self, prefix: str, start_after: str, limit: int) -> list[tuple[str, int]]:
        """(key below ``prefix``, LastModified in ms) in key order."""
        found: list[tuple[str, int]] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            params["StartAfter"] = prefix + start_after
        try:
            while len(found) < limit:
                page = await self.s3.list_objects_v2(
                    MaxKeys=min(1000, limit - len(found)), **params
                )
                for item in page.get("Contents", []):
                    modified = int(item["LastModified"].timestamp() * 1000)
                    found.append((item["Key"][len(prefix) :], modified))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                params["ContinuationToken"] = token
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable("list", exc) from exc
        return found

    async def list_blobs(self, *, after: str, limit: int) -> list[StoredBlob]:
        # Live keys are "ab/cd/<hash>": hex fan-out directories sort before
        # "tmp/" and "trash/", so the listing is over at the first key that
        # is not one.
        start = f"{after[:2]}/{after[2:4]}/{after}" if after else ""
        found: list[StoredBlob] = []
        for name, modified in await self._list(self._root, start, limit):
            blob_hash = name.rpartition("/")[2]
            if name != f"{blob_hash[:2]}/{blob_hash[2:4]}/{blob_hash}" or not _valid_hash(
                blob_hash
            ):
                break
            found.append(StoredBlob(blob_hash, modified))
        return found

    async def list_condemned(self, *, after: str, limit: int) -> list[StoredBlob]:
        listed = await self._list(f"{self._root}trash/", after, limit)
        return [StoredBlob(name, modified) for name, modified in listed if _valid_hash(name)]

    async def _copy(self, source: str, target: str, metadata: dict[str, str]) -> bool:
        """Server-side copy; False when ``source`` is gone."""
        try:
            await self.s3.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="REPLACE",
                Metadata=metadata,
            )
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise _unavailable("copy", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("copy", exc) from exc
        return True

    async def condemn(self, blob_hash: str) -> None:
        now = time.time_ns() // 1_000_000
        # Copy first, then delete the live key: at every moment one of the
        # two is there for a reader.
        if await self._copy(
            self.key(blob_hash), self._trash_key(blob_hash), {_CONDEMNED_AT: str(now)}
        ):
            await self._delete_key(self.key(blob_hash), quiet=False)

    async def restore(self, blob_hash: str) -> None:
        live, condemned = self.key(blob_hash), self._trash_key(blob_hash)
        # Same bytes under the same name: copying over a live key put again
        # meanwhile changes nothing but its LastModified (now, as restored).
        if await self._head(live) or await self._copy(condemned, live, {}):
            await self._delete_key(condemned, quiet=False)

    async def purge(self, blob_hash: str, *, condemned_before: int) -> bool:
        condemned = self._trash_key(blob_hash)
        metadata = await self._head_metadata(condemned)
        if metadata is None:
            return False
        try:
            at = int(metadata.get(_CONDEMNED_AT, ""))
        except ValueError:
            at = 0  # not ours to date: old enough
        if at > condemned_before:
            return False
        await self._delete_key(condemned, quiet=False)
        return True

    async def _delete_key(self, key: str, *, quiet: bool = True) -> None:
        """S3 answers a delete of a missing key with success, so twice is fine.
        ``quiet``: cleanup after another failure, which is the one to report."""
        try:
            await self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            if not quiet:
                raise _unavailable("delete", exc) from exc


def _refused_or_unavailable(action: str, exc: ClientError) -> Exception:
    """A checksum the server refused is a corrupt write, not an outage."""
    code = exc.response.get("Error", {}).get("Code", "")
    about_digest = "checksum" in str(exc).lower() or "digest" in str(exc).lower()
    if code in _DIGEST_CODES and about_digest:
        return BlobCorrupt(f"S3 {action} refused: {exc}")
    return _unavailable(action, exc)


def _reply_error(action: str, reply: Reply) -> Exception:
    """The same for a signed request's reply."""
    code = reply.error_code
    message = f"S3 {action}: HTTP {reply.status} {code}".rstrip()
    lowered = reply.body.lower()
    about_digest = b"checksum" in lowered or b"digest" in lowered or b"sha256" in lowered
    if code in _DIGEST_CODES and about_digest:
        return BlobCorrupt(f"{message} refused")
    return BackendUnavailable(f"{message} failed")


class _MultipartUpload:
    """One multipart upload: parts in order, completed, or aborted (the
    context manager aborts unless ``complete`` ran)."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self.store = store
        self.key = key
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.completed = False

    async def __aenter__(self) -> _MultipartUpload:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.completed:
            await self.abort()

    async def start(self) -> None:
        store = self.store
        try:
            created = await store.s3.create_multipart_upload(
                Bucket=store.bucket, Key=self.key, ChecksumAlgorithm="SHA256"
            )
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable("multipart start", exc) from exc
        self.upload_id = created["UploadId"]

    async def add_part(self, body: bytes) -> None:
        assert self.upload_id is not None
        part = await self.store._put_part(self.key, self.upload_id, len(self.parts) + 1, body)
        self.parts.append(part)

    async def complete(self) -> None:
        assert self.upload_id is not None
        store = self.store
        try:
            await store.s3.complete_multipart_upload(
                Bucket=store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
            )
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable("multipart complete", exc) from exc
        self.completed = True

    async def abort(self) -> None:
        """Frees the parts sent so far. Runs while another error (or a
        cancellation) is on its way out: its own failure is not reported,
        and S3's lifecycle rule for incomplete uploads is the backstop."""
        if self.upload_id is None or self.completed:
            return
        with contextlib.suppress(ClientError, *_TRANSPORT_ERRORS):
            await self.store.s3.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )
        self.upload_id = None
