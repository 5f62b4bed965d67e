"""Implementations of ``BlobStore`` for the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mailfleet.storage.embedded.files import FileBlobStore
from tests.contract.backends import register


@register("blob", "embedded", "files")
@asynccontextmanager
async def file_blobs(directory: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(directory / "blobs")
    await store.open()
    try:
        yield store
    finally:
        await store.close()
