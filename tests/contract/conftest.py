"""Fixtures shared by the contract suites of the mailbox roles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from . import backends
from .implementations.mailbox import MailboxBackend
from .implementations.queue import delete_left_behind


@pytest.fixture(params=backends.params("mailbox"))
async def mailbox_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MailboxBackend]:
    """Each selected mailbox store, opened on a fresh database."""
    async with request.param.open(tmp_path) as opened:
        yield opened


@pytest.fixture(scope="session", autouse=True)
def _queues_left_behind() -> Iterator[None]:
    """Deletes, once the session ends, the streams of queues whose test
    could not delete them at once (``implementations/queue.py``)."""
    yield
    asyncio.run(delete_left_behind())
