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
    close the stores and it exits with ``INTERRUPTED``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed = False
    if task is not None:
        # Not on a thread other than the main one (uvloop: ValueError).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            installed = True
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


def interrupted(what: str, resume: str) -> int:
    """Says what was stopped and how to go on; the exit status to return."""
    print(f"mailfleet: {what} interrupted; {resume}", file=sys.stderr)
    return INTERRUPTED
