"""The event loop processes run on: uvloop where it is installed (Linux and
macOS), asyncio's own otherwise or when ``MAILFLEET_LOOP=asyncio`` (to rule
the loop out when debugging). uvloop's C loop and transports cut the
per-connection and per-read overhead the SMTP and HTTP servers pay on every
command (decision 0008); the code is the same on either loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("MAILFLEET_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
