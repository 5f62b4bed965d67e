"""The realtime-only process's collector policy (``realtime/collector.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mailfleet.realtime import collector


@pytest.fixture
def policy() -> Iterator[None]:
    collector.freeze_startup_heap()
    try:
        yield
    finally:
        gc.callbacks.remove(collector._freeze_after_full)
        gc.unfreeze()


@pytest.mark.usefixtures("policy")
def test_what_survives_a_full_collection_is_frozen() -> None:
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [[n] for n in range(1000)]  # 1,001 tracked objects that stay
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert gc.get_count()[0] < len(kept)
    # Frozen, still freed when nothing refers to them.
    del kept
    assert gc.get_freeze_count() < frozen + 1000


@pytest.mark.usefixtures("policy")
def test_installed_once() -> None:
    collector.freeze_startup_heap()
    assert gc.callbacks.count(collector._freeze_after_full) == 1
