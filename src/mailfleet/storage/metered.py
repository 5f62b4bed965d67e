"""Every storage role but the queue counted for ``/metrics`` (issue 15),
whatever its backend: the latency of each call of the role's interface and
the calls that failed because the backend was unavailable or full.
``create_stores`` wraps each store in it, so no implementation counts for
itself (the queue has ``MeteredQueue``, which also counts items).

The wrapper is built from the role's Protocol: each ``async def`` of the
interface is timed, except what waits by design or only opens and closes;
everything else (streams, watches, callbacks) goes straight to the store.
Each operation's histogram child is bound once, here: a call costs two
clock reads and one observation (~2 µs), on paths such as worker-in's
``store_messages`` and the folder listing that run thousands of times a
second."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mailfleet.metrics import STORAGE_ERRORS, STORAGE_SECONDS
from mailfleet.storage.errors import BackendUnavailable

T = TypeVar("T")

# Not latencies worth a histogram: opening and closing happen once, and
# ``ping`` is what /readyz and each scrape already report as up or down.
UNTIMED = frozenset({"open", "close", "ping"})


def timed_operations(interface: type) -> list[str]:
    """The interface's coroutine methods that are timed."""
    return sorted(
        name
        for name, value in vars(interface).items()
        if not name.startswith("_") and name not in UNTIMED and inspect.iscoroutinefunction(value)
    )


class MeteredStore:
    """Delegates to ``inner``; the timed operations are attributes of the
    instance, so a call finds its wrapper without ``__getattr__``."""

    def __init__(self, inner: Any, role: str, operations: list[str]) -> None:
        self.inner = inner
        errors = STORAGE_ERRORS.labels(role)
        for name in operations:
            seconds = STORAGE_SECONDS.labels(role, name)
            setattr(self, name, _timed(inner, name, seconds, errors))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"MeteredStore({self.inner!r})"


def _timed(inner: Any, name: str, seconds: Any, errors: Any) -> Callable[..., Awaitable[Any]]:
    observe = seconds.observe
    count_error = errors.inc
    clock = time.perf_counter

    # The store's method is looked up at each call, not bound here: what
    # replaces it later (a test's fault) is what gets called and timed.
    @functools.wraps(getattr(inner, name))
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = clock()
        try:
            return await getattr(inner, name)(*args, **kwargs)
        except BackendUnavailable:
            count_error()
            raise
        finally:
            observe(clock() - began)

    return timed


def metered(store: T, role: str, interface: type) -> T:
    """``store`` with the latency and failures of its role's calls counted."""
    wrapper: Any = MeteredStore(store, role, timed_operations(interface))
    return wrapper  # type: ignore[no-any-return]
