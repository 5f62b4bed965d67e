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

    python -m mailfleet.delivery.incoming_process   # settings as JSON on stdin
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from mailfleet.config import Settings
from mailfleet.loop import run

log = logging.getLogger("mailfleet.worker_in")
RESTART_DELAY = 1.0


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
            "mailfleet.delivery.incoming_process",
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


async def _child_main() -> int:
    from mailfleet.delivery.incoming import IncomingWorker
    from mailfleet.runtime import Runtime

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    settings = Settings.model_validate_json(await stdin.readline())
    runtime = await Runtime.open(settings)
    worker = IncomingWorker(runtime.incoming, runtime.stores.queue)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def parent_gone() -> None:
        await stdin.read()  # EOF: the parent closed the pipe or died
        stop.set()

    watch = asyncio.create_task(parent_gone())
    try:
        worker.start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        # The parent reads nothing more from that pipe: anything printed
        # later goes to stderr, so a full pipe can never block the worker.
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        await stop.wait()
    finally:
        watch.cancel()
        await worker.stop()
        await runtime.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="worker-in: %(levelname)s %(message)s")
    sys.exit(run(_child_main()))
