"""Fixtures shared by the contract suites of the mailbox roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from . import backends
from .implementations.mailbox import MailboxBackend


@pytest.fixture(params=backends.params("mailbox"))
async def mailbox_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MailboxBackend]:
    """Each selected mailbox store, opened on a fresh database."""
    async with request.param.open(tmp_path) as opened:
        yield opened
