"""The garbage collector's policy in a process that runs the ``realtime`` role
alone (docs/benchmarks.md, issue 11, sessions 6 and 7).

Every full collection scans every object the collector tracks, and every
socket of the process waits meanwhile. Before the first client connects, a
realtime process already tracks some 180,000 objects (the code, FastAPI,
pydantic, SQLAlchemy, the stores), which live as long as the process: scanning
them cost 150-250 ms per full collection, and long polls at 1,000 answers a
second made a full collection about every second. So they are frozen once the
role has started (``gc.freeze``): no collection scans them again.

A frozen object is still freed by reference counting when nothing refers to it
any more; what must not happen is a frozen object becoming part of a reference
cycle that is garbage, which no collection would look at. What is frozen here
is the process's own machinery, made to last until it exits.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once the role has started, before clients connect: what exists
    then is the code, the application and its stores."""
    gc.collect()
    gc.freeze()
