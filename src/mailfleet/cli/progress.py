"""What long CLI commands share (``import``, ``export``, ``index rebuild``):
a rich progress bar (count, rate, time left) on standard error, and stopping
cleanly on Ctrl-C or SIGTERM, saying how to resume."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# What a command returns when it was stopped (128 + the signal, as shells do).
INTERRUPTED = 130


class RateColumn(ProgressColumn):
    """Items per second since the task started."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str = "mails") -> Progress:
    """A progress display on standard error: description, bar, done/total,
    rate, elapsed, time left. Drawn live on a terminal only, so scripts and
    tests get the final summary lines alone."""
    console = Console(file=sys.stderr)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM cancels the running command as Ctrl-C does (asyncio.Runner
    already turns SIGINT into a cancellation), so its ``finally`` blocks
    close the stores and it exits with ``INTERRUPTED``.

    A client library can swallow a cancellation that lands at the instant
    its own wait ends (``asyncio.wait_for`` and ``async_timeout`` in 3.11 do);
    the command would then run to its end as if never asked to stop. So the
    cancellation is repeated until the block is left, and a block that still
    ends normally after a SIGTERM ends as cancelled."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed = False
    requested = False
    inside = True

    def cancel() -> None:
        if inside and task is not None and not task.done():
            task.cancel()
            loop.call_later(0.2, cancel)

    def on_sigterm() -> None:
        nonlocal requested
        if not requested:
            requested = True
            cancel()

    if task is not None:
        # Not on a thread other than the main one (uvloop: ValueError).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            installed = True
    try:
        yield
    finally:
        inside = False
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)
    if requested:
        raise asyncio.CancelledError


def interrupted(what: str, resume: str) -> int:
    """Says what was stopped and how to go on; the exit status to return."""
    print(f"mailfleet: {what} interrupted; {resume}", file=sys.stderr)
    return INTERRUPTED
