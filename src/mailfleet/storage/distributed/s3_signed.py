"""The two S3 requests on the mail path, signed and sent without botocore's
request pipeline: a small blob's conditional PUT (the MX's DATA path,
worker-in's parts) and a whole blob's GET (worker-in, message reads).

Why (decision 0015, amended): aiobotocore spends about 2 ms of CPU on one
4 KiB PUT (parameter validation, serialization from the service model, the
event hooks, the retry handler), about as much as the rest of a received mail
in ``smtp-in``. Signed with botocore's own SigV4 signer and sent on a kept
aiohttp session, the same PUT costs 0.7 ms. Everything else (multipart,
copies, listings, deletes) stays on aiobotocore: rare, and not worth a
second implementation.

The payload is signed, not ``UNSIGNED-PAYLOAD``: a content-addressed blob's
SHA-256 is its name, so the signature covers the body at no cost.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.auth import EMPTY_SHA256_HASH, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

# Statuses worth another try (S3's "slow down" and a front end's hiccups).
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class _KnownPayloadAuth(S3SigV4Auth):
    """SigV4 with the payload's SHA-256 given, not computed again."""

    def __init__(self, credentials: ReadOnlyCredentials, region: str, payload_sha256: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: AWSRequest) -> str:
        return self._payload_sha256


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def error_code(self) -> str:
        found = _ERROR_CODE.search(self.body)
        return found.group(1).decode("ascii", "replace") if found else ""


class SignedRequests:
    """Signs and sends single requests for one bucket on a kept session.
    ``credentials``: botocore's (or aiobotocore's refreshable) credentials."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        addressing: str,
        credentials: Credentials,
        attempts: int,
    ) -> None:
        parts = urlsplit(endpoint)
        if addressing == "virtual":
            self._base = f"{parts.scheme}://{bucket}.{parts.netloc}/"
        else:
            self._base = f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}/"
        self.region = region
        self.credentials = credentials
        self.attempts = attempts
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=30),
            # S3 names its own headers; nothing of the session's defaults.
            skip_auto_headers=("User-Agent", "Content-Type"),
            auto_decompress=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def url(self, key: str) -> str:
        return self._base + quote(key, safe="/~")

    async def _frozen(self) -> ReadOnlyCredentials:
        frozen = self.credentials.get_frozen_credentials()
        if asyncio.iscoroutine(frozen):  # aiobotocore's refreshable credentials
            frozen = await frozen
        return frozen

    async def prepare(
        self,
        method: str,
        key: str,
        *,
        body: bytes = b"",
        body_sha256: str = EMPTY_SHA256_HASH,
        headers: dict[str, str] | None = None,
    ) -> AWSRequest:
        """The request as it goes on the wire, signed (tests watch this)."""
        request = AWSRequest(method=method, url=self.url(key), data=body, headers=headers or {})
        _KnownPayloadAuth(await self._frozen(), self.region, body_sha256).add_auth(request)
        return request

    async def send(
        self,
        method: str,
        key: str,
        *,
        body: bytes = b"",
        body_sha256: str = EMPTY_SHA256_HASH,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request, tried again on a dropped connection or a 5xx up to
        ``attempts`` times in all. Transport errors past them propagate
        (aiohttp.ClientError, OSError, TimeoutError); any status is a reply."""
        if self._session is None:
            raise aiohttp.ClientConnectionError("S3 session is not open")
        for attempt in range(self.attempts):
            request = await self.prepare(
                method, key, body=body, body_sha256=body_sha256, headers=headers
            )
            try:
                async with self._session.request(
                    method, self.url(key), data=_payload(body), headers=_wire(request)
                ) as response:
                    reply = Reply(
                        response.status,
                        {k.lower(): v for k, v in response.headers.items()},
                        await response.read(),
                    )
            except (aiohttp.ClientError, OSError, TimeoutError):
                if attempt + 1 >= self.attempts:
                    raise
            else:
                if reply.status not in _RETRY_STATUSES or attempt + 1 >= self.attempts:
                    return reply
            await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")


def _wire(request: AWSRequest) -> dict[str, Any]:
    return {k: v.decode("ascii") if isinstance(v, bytes) else v for k, v in request.headers.items()}


# aiohttp sends a bytes body in one write and warns above this (a megabyte):
# a file-like body goes out in chunks instead, without blocking the loop.
_LARGE_BODY = 1 << 20


def _payload(body: bytes) -> bytes | io.BytesIO | None:
    if not body:
        return None
    return io.BytesIO(body) if len(body) > _LARGE_BODY else body
