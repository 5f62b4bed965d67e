"""Implementations of ``BlobStore`` for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.distributed.s3_blobs import S3BlobStore
from mailfleet.storage.embedded.files import FileBlobStore
from tests.contract.backends import register
from tests.support.s3 import s3_blob_store


@register("blob", "embedded", "files")
@asynccontextmanager
async def file_blobs(directory: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(directory / "blobs")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@register("blob", "distributed", "s3")
@asynccontextmanager
async def s3_blobs(directory: Path) -> AsyncIterator[S3BlobStore]:
    """On moto's S3 server, a bucket of its own; parts small enough that the
    suite's larger blobs go as multipart uploads."""
    async with s3_blob_store() as store:
        yield store
