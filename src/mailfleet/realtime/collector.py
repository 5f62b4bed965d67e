"""The garbage collector's policy in a process that runs the ``realtime`` role
alone (docs/benchmarks.md, issue 11, sessions 6 and 7).

Every full collection scans every object the collector tracks, and every
socket of the process waits meanwhile. Before the first client connects, a
realtime process already tracks some 180,000 objects (the code, FastAPI,
pydantic, SQLAlchemy, the stores), which live as long as the process: scanning
them cost 150-250 ms per full collection, and long polls at 1,000 answers a
second made a full collection about every second. So they are frozen once the
role has started (``gc.freeze``): no collection scans them again.

The open sockets are the rest: about 120 tracked objects each, a second of
full collection at 10,000 sockets, which happened every few minutes (when the
objects promoted since the last one reach a quarter of the oldest generation)
and stalled every socket for it. So what survives a full collection is frozen
too: by then it is objects that live long (the sockets that are open), and the
next full collection scans only what became old since (40-110 ms at 10,000
sockets instead of 0.9-1.5 s).

A frozen object is still freed by reference counting when nothing refers to it
any more; what must not happen is a frozen object becoming part of a reference
cycle that is garbage, which no collection would look at. Sockets and polls
that end leave no cycle behind (tests/realtime/test_garbage.py; uvicorn breaks
its HTTP protocol's cycle with its parser when a connection is lost).

Collecting the young generations on a timer (session 6's policy, measured
again alone in session 7) made the WebSocket tail worse, not better: it is not
part of this.
"""

from __future__ import annotations

import gc
from typing import Any

_OLDEST = 2


def _freeze_after_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == _OLDEST:
        gc.freeze()


def freeze_startup_heap() -> None:
    """Call once the role has started, before clients connect: what exists
    then is the code, the application and its stores. Installs the freeze
    after each full collection as well (once per process)."""
    gc.collect()
    gc.freeze()
    if _freeze_after_full not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full)
