"""Runs the roles of one process (``mailfleet serve``) on sockets it binds
itself, so that port 0 works for tests and several instances fit side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from mailfleet.api.app import create_app
from mailfleet.config import Settings, split_hostport
from mailfleet.runtime import Runtime

log = logging.getLogger("mailfleet.server")


def bind(hostport: str) -> socket.socket:
    host, port = split_hostport(hostport)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: responses written in two parts (head, body)
    # must not wait 40 ms for a delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Server:
    """All roles over one runtime. ``start`` returns once every port listens."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.http_socket: socket.socket | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Server:
        return cls(await Runtime.open(settings))

    @property
    def http_address(self) -> tuple[str, int]:
        assert self.http_socket is not None
        host, port = self.http_socket.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self.http_socket = bind(self.runtime.settings.http.listen)
        config = uvicorn.Config(
            create_app(self.runtime),
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._http = uvicorn.Server(config)
        # ``serve`` would install signal handlers; the process owns those
        # (cli/serve.py), and tests run several servers in one loop.
        self._http_task = asyncio.create_task(self._http._serve(sockets=[self.http_socket]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the startup error
                raise RuntimeError("HTTP server exited during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
            self._http = None
        if self.http_socket is not None:
            self.http_socket.close()
        await self.runtime.close()
