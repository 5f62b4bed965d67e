"""The garbage collector's policy in a process that runs the ``realtime`` role
alone (docs/benchmarks.md, issue 11, session 6).

Such a process holds thousands of idle sockets whose objects live for minutes
or hours: about 200 objects a socket (the server's protocol, the ASGI
application's coroutines, the feed's subscription), over the 250,000 of the
code and the application themselves. CPython's full collection scans all of
them, 0.7-2 s at 10,000 sockets, and every socket waits. And it runs the most
often exactly while sockets connect: after a full collection, the next one is
due when the objects promoted to the oldest generation since exceed a quarter
of it, and each socket's objects are such objects.

So the oldest generation is frozen (``gc.freeze``): once when the process has
started, and after each full collection, whose survivors are by then objects
that live long (the sockets that are open). A later full collection scans only
what became old since.
Young collections need help too. CPython starts one when allocations outnumber
deallocations by 700, but here old objects die as fast as new ones are made:
each socket's ping every 20 s makes timers and parser state that live 20 s and
frees those of the previous ping, so the count stays low while the young
generations fill up (80,000 objects and 85 ms a collection, measured with
10,000 sockets at 1,000 events/s). A timer collects the young generations every
``YOUNG_SECONDS`` instead, a millisecond or two each time.

A frozen object is still freed by reference counting when nothing refers to it
any more: what a frozen closed socket must not leave behind is a reference
cycle, which no collection would look at again: the feed breaks the one a
cancelled watch made (``ChangeFeed._unwatch``), and a test checks that ended
sockets and polls leave none on the server side (tests/realtime/test_garbage.py).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

# The oldest generation (CPython has three).
_OLDEST = 2
# How often the young generations are collected whatever their count says.
YOUNG_SECONDS = 0.1
_installed = False


def _freeze_after_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == _OLDEST:
        gc.freeze()


def _collect_young(loop: asyncio.AbstractEventLoop) -> None:
    gc.collect(_OLDEST - 1)
    loop.call_later(YOUNG_SECONDS, _collect_young, loop)


def freeze_long_lived() -> None:
    """Installs the policy in this process's running loop (once): call when
    the role has started, when what exists is the code, the application and
    its stores."""
    global _installed
    gc.collect()
    gc.freeze()
    if not _installed:
        _installed = True
        gc.callbacks.append(_freeze_after_full)
        loop = asyncio.get_running_loop()
        loop.call_later(YOUNG_SECONDS, _collect_young, loop)
