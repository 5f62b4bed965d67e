"""worker-out against a remote MX that answers a byte at a time (a tarpit, or
a server in trouble): the delivery to it is cut off by bounded timeouts and
deferred with the reason, and mail to other destinations is not held up
meanwhile. The slow MX is a raw asyncio server; the fast one is aiosmtpd."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.conftest import StartService
from tests.delivery.test_outbound import sent_delivery, start_outbound, wait_delivery
from tests.support.smtp_peer import SmtpPeer

COMMAND_TIMEOUT = 1.5


class TarpitMx:
    """Greets with an endless multi-line 220, one byte every ``every``
    seconds: each line (6 bytes) comes within the command timeout, the reply
    never ends."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.connections = 0
        self.open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TarpitMx:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        try:
            while not reader.at_eof():
                for byte in b"220-\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(self.every)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()


async def test_a_tarpit_mx_is_cut_off_and_does_not_hold_up_other_destinations(
    start_service: StartService,
) -> None:
    tarpit = await TarpitMx().start()
    fast = await SmtpPeer().start()
    service = await start_outbound(
        start_service,
        routes={"slow.test": f"127.0.0.1:{tarpit.port}", "fast.test": f"127.0.0.1:{fast.port}"},
        delivery={
            "connect_timeout_seconds": 2,
            "command_timeout_seconds": COMMAND_TIMEOUT,
            "attempt_timeout_seconds": 20,
            "retry_schedule_seconds": [60],  # one attempt within the test
            "time_scale": 1,
        },
    )
    alice = await service.user("alice")
    started = time.monotonic()
    to_slow = await alice.send(to=["carol@slow.test"], body="to the tarpit")
    to_fast = await alice.send(to=["dave@fast.test"], body="to a healthy server")

    await wait_delivery(alice, to_fast["id"], {"dave@fast.test": "delivered"}, timeout=30)
    # Delivered while the attempt on the tarpit was still going on: by what
    # happened first, not by the clock (a loaded machine slows both).
    slow = (await sent_delivery(alice, to_slow["id"]))["carol@slow.test"]
    assert slow["status"] == "queued", "the fast MX waited for the slow one"
    assert len(fast.accepted("dave@fast.test")) == 1

    deferred = await wait_delivery(
        alice, to_slow["id"], {"carol@slow.test": "deferred"}, timeout=30
    )
    cut_after = time.monotonic() - started
    assert "did not answer in time" in deferred["carol@slow.test"]["detail"]
    # Cut at the command timeout, not after a hundred slow lines (a
    # timeout per line let it run two minutes, until the reply was "endless"):
    # any bound far below that says so, however loaded the machine.
    assert COMMAND_TIMEOUT <= cut_after < 20, cut_after
    # We hung up (the tarpit sees it at its next byte), and only tried once.
    deadline = time.monotonic() + 10
    while tarpit.open:
        assert time.monotonic() < deadline, "the connection to the tarpit stays open"
        await asyncio.sleep(0.05)
    assert tarpit.connections == 1
    await tarpit.stop()
    await fast.stop()
