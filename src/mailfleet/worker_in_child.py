"""worker-in's child process: the entry point ``WorkerInProcess``
(``delivery/incoming_process.py``) starts. A composition root like
``server.py``: it reads the settings as JSON on stdin, opens a ``Runtime`` on
them, says "ready" on stdout once its stores are open, and runs an
``IncomingWorker`` until the parent's pipe closes or a signal stops it.

    python -m mailfleet.worker_in_child   # settings as JSON on stdin
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from mailfleet.config import Settings
from mailfleet.delivery.incoming import IncomingWorker
from mailfleet.logs import configure as configure_logs
from mailfleet.loop import run
from mailfleet.runtime import Runtime


async def _child_main() -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    settings = Settings.model_validate_json(await stdin.readline())
    configure_logs(settings.logging)  # the parent's [logging]: same file, same format
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
    # Until the settings are read: then logs.configure replaces this.
    logging.basicConfig(level=logging.WARNING, format="worker-in: %(levelname)s %(message)s")
    sys.exit(run(_child_main()))
