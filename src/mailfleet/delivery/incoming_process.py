"""worker-in in a process of its own, started and watched by ``mailfleet serve``.

In one process the MX, the API and worker-in share one event loop and, in
CPython, one core: at 20 SMTP sessions the worker's parsing and storing took
CPU the MX needed to say 250. Here the worker runs as a child process on the
same settings and the same stores (the embedded stores are files that several
processes may open; the queue is shared through its database, and the child's
``Queue.fetch`` notices new items by polling the database's change counter). The parent
restarts the child if it dies; the child exits when the parent's pipe closes,
so it never outlives ``serve``. Exactly-once delivery does not depend on any
of this: a mail the child leased when it died comes back after its lease and
its ingest key stops a second copy.

The child's own entry point is a composition root (it opens a ``Runtime``),
so it lives beside the others, in ``mailfleet/worker_in_child.py``:

    python -m mailfleet.worker_in_child   # settings as JSON on stdin
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from mailfleet.config import Settings

log = logging.getLogger("mailfleet.worker_in")
RESTART_DELAY = 1.0
CHILD_MODULE = "mailfleet.worker_in_child"  # run with ``python -m``


class WorkerInProcess:
    """The parent's handle on the child: start, restart when it dies, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="worker-in process")

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(self.settings.model_dump_json().encode() + b"\n")
        await self.process.stdin.drain()
        ready = await self.process.stdout.readline()  # once its stores are open
        if ready.strip() != b"ready":
            code = await self.process.wait()
            raise RuntimeError(f"worker-in process exited during startup (status {code})")

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            log.error("worker-in process exited (status %s); restarting", code)
            await asyncio.sleep(RESTART_DELAY)
            try:
                await self._spawn()
            except Exception:
                log.exception("cannot restart worker-in process")

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
