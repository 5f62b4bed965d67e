"""Which implementations of each storage role the contract suites run against.

``MAILFLEET_TEST_BACKENDS`` names backend families, comma-separated
(``embedded`` by default; ``embedded,distributed`` once the distributed
implementations exist). A suite asks for ``params(role)`` and gets one pytest
parameter per selected implementation of that role, so a behaviour test is
written once and runs against each.

Each role's implementations are registered in
``tests/contract/implementations/<role>.py`` (imported on first use) as
factories: an async context manager taking a fresh directory (for the embedded
ones) and yielding an opened store, closed and cleaned up on exit. Distributed
implementations register the same way and create their own databases, streams
and keys with unique names.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

Factory = Callable[[Path], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class Implementation:
    role: str
    family: str  # "embedded" | "distributed"
    name: str
    open: Factory


_REGISTRY: list[Implementation] = []


def register(role: str, family: str, name: str) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        _REGISTRY.append(Implementation(role, family, name, factory))
        return factory

    return add


def selected_families() -> set[str]:
    raw = os.environ.get("MAILFLEET_TEST_BACKENDS", "embedded")
    return {part.strip() for part in raw.split(",") if part.strip()}


def params(role: str) -> list[Any]:
    """One ``pytest.param`` per selected implementation of ``role``."""
    importlib.import_module(f"tests.contract.implementations.{role}")
    families = selected_families()
    found = [i for i in _REGISTRY if i.role == role and i.family in families]
    if not found:
        raise RuntimeError(
            f"no implementation of {role!r} for MAILFLEET_TEST_BACKENDS={sorted(families)}"
        )
    return [pytest.param(i, id=f"{i.family}-{i.name}") for i in found]


async def opened(implementation: Implementation, directory: Path) -> AsyncIterator[Any]:
    """For fixtures: ``yield from`` the implementation's opened store."""
    async with implementation.open(directory) as store:
        yield store
