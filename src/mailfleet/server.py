"""Runs the roles of one process (``mailfleet serve``) on sockets it binds
itself, so that port 0 works for tests and several instances fit side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from mailfleet.api.app import asgi_app
from mailfleet.blobs import BlobSweeper
from mailfleet.config import Settings, split_hostport
from mailfleet.delivery.incoming import IncomingWorker
from mailfleet.delivery.outgoing import OutgoingWorker
from mailfleet.metrics import ROLES_RUNNING
from mailfleet.runtime import Runtime
from mailfleet.smtp.inbound import MxHandler
from mailfleet.smtp.server import ConnectionLimits, MailfleetSMTP, proxy_networks
from mailfleet.smtp.submission import SubmissionHandler, SubmissionSMTP
from mailfleet.smtp.tls import self_signed, server_context

log = logging.getLogger("mailfleet.server")

ROLES = ("api", "realtime", "smtp-in", "submission", "worker-in", "worker-out")
# Connections the kernel completes before we accept them. A burst past it
# (a thousand MTAs at once) makes clients wait out SYN-ACK retransmissions.
LISTEN_BACKLOG = 1024


def bind(hostport: str) -> socket.socket:
    host, port = split_hostport(hostport)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: replies written in parts (HTTP head and
    # body, SMTP multi-line) must not wait 40 ms for a delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class Server:
    """The chosen roles over one runtime. ``start`` returns once every port
    listens; ``stop`` closes listeners first, then the stores."""

    def __init__(self, runtime: Runtime, roles: Iterable[str] = ROLES) -> None:
        self.runtime = runtime
        self.roles = set(roles)
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; choose from {ROLES}")
        self.http_socket: socket.socket | None = None
        self.smtp_socket: socket.socket | None = None
        self.submission_socket: socket.socket | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.operations_socket: socket.socket | None = None
        self._operations: uvicorn.Server | None = None
        self._operations_task: asyncio.Task[None] | None = None
        self._smtp: asyncio.Server | None = None
        self._submission: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._smtp_sessions: weakref.WeakSet[MailfleetSMTP] = weakref.WeakSet()
        self.worker_in: IncomingWorker | None = None
        self.worker_out: OutgoingWorker | None = None
        self.blob_sweeper: BlobSweeper | None = None

    @classmethod
    async def open(cls, settings: Settings, roles: Iterable[str] = ROLES) -> Server:
        return cls(await Runtime.open(settings), roles)

    @property
    def http_address(self) -> tuple[str, int]:
        assert self.http_socket is not None
        host, port = self.http_socket.getsockname()[:2]
        return host, port

    @property
    def operations_address(self) -> tuple[str, int]:
        assert self.operations_socket is not None
        host, port = self.operations_socket.getsockname()[:2]
        return host, port

    @property
    def smtp_address(self) -> tuple[str, int]:
        assert self.smtp_socket is not None
        host, port = self.smtp_socket.getsockname()[:2]
        return host, port

    @property
    def submission_address(self) -> tuple[str, int]:
        assert self.submission_socket is not None
        host, port = self.submission_socket.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        for role in self.roles:
            ROLES_RUNNING.labels(role).set(1)
        if "worker-in" in self.roles:
            self.worker_in = IncomingWorker(self.runtime.incoming, self.runtime.stores.queue)
            self.worker_in.start()
        if "worker-out" in self.roles:
            runtime = self.runtime
            self.worker_out = OutgoingWorker(
                runtime.outgoing, runtime.stores.queue, runtime.settings.delivery
            )
            self.worker_out.start()
            blobs = runtime.settings.blobs
            if blobs.sweep:
                self.blob_sweeper = BlobSweeper(
                    runtime.blob_sweep,
                    interval_seconds=blobs.sweep_interval_seconds,
                    limit=blobs.sweep_limit,
                )
                self.blob_sweeper.start()
        if "smtp-in" in self.roles:
            await self._start_smtp()
        if "submission" in self.roles:
            await self._start_submission()
        if self.roles & {"api", "realtime"}:
            await self._start_http()
        if self.runtime.settings.metrics.listen:
            await self._start_operations()

    async def _start_http(self) -> None:
        self.http_socket = bind(self.runtime.settings.http.listen)
        app = asgi_app(self.runtime, api="api" in self.roles, realtime="realtime" in self.roles)
        self._http, self._http_task = await self._serve_http(self.http_socket, app)

    async def _start_operations(self) -> None:
        """``[metrics] listen``: /metrics, /healthz and /readyz of whatever
        roles this process runs."""
        self.operations_socket = bind(self.runtime.settings.metrics.listen)
        app = asgi_app(self.runtime, api=False, realtime=False)
        self._operations, self._operations_task = await self._serve_http(
            self.operations_socket, app
        )

    async def _serve_http(
        self, sock: socket.socket, app: ASGIApp
    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        realtime = self.runtime.settings.realtime
        config = uvicorn.Config(
            app,
            log_level="warning",
            # Its loggers propagate to the root's handler: the same lines as
            # every other logger's (logs.py), not a format of uvicorn's own.
            log_config=None,
            lifespan="off",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            ws="websockets-sansio",  # keepalive on timers: no task per idle socket
            ws_ping_interval=realtime.heartbeat_seconds,
            ws_ping_timeout=realtime.heartbeat_timeout_seconds,
            # Events are a few hundred bytes: compression would save little and
            # cost each idle socket its zlib state (tens of KB).
            ws_per_message_deflate=False,
            # A client sends one small frame (its token); nothing larger is read.
            ws_max_size=64 * 1024,
        )
        server = uvicorn.Server(config)
        # ``serve`` would install signal handlers; the process owns those
        # (cli/serve.py), and tests run several servers in one loop.
        task = asyncio.create_task(server._serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("HTTP server exited during startup")
            await asyncio.sleep(0.01)
        return server, task

    async def _tls_context(self) -> ssl.SSLContext:
        """STARTTLS for the MX and submission: the configured certificate, or
        a self-signed one made once per data directory."""
        if self._tls is None:
            settings = self.runtime.settings
            smtp = settings.smtp
            if smtp.tls_cert and smtp.tls_key:
                cert, key = smtp.tls_cert, smtp.tls_key
            else:
                cert, key = await asyncio.to_thread(
                    self_signed, settings.data_dir / "tls", smtp.hostname
                )
            self._tls = server_context(cert, key)
        return self._tls

    async def _smtp_options(self) -> dict[str, Any]:
        """What the MX and submission protocols share, and fresh connection
        limits (each listener counts its own clients)."""
        settings = self.runtime.settings
        smtp = settings.smtp
        return {
            "limits": ConnectionLimits(
                self.runtime.limiter,
                smtp.max_connections_per_ip,
                smtp.connections_per_minute_per_ip,
            ),
            "data_size_limit": settings.limits.max_message_bytes,
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "hostname": smtp.hostname,
            "ident": "mailfleet ESMTP",
            "tls_context": await self._tls_context(),
            "require_starttls": False,
            "timeout": smtp.timeout_seconds,
            "data_timeout": smtp.data_timeout_seconds,
            "header_limit": settings.limits.max_header_bytes,
            "proxy_from": proxy_networks(smtp.proxy_trusted) if smtp.proxy_protocol else (),
        }

    async def _listen_smtp(
        self, listen: str, protocol: Callable[[], MailfleetSMTP]
    ) -> tuple[socket.socket, asyncio.Server]:
        def factory() -> MailfleetSMTP:
            session = protocol()
            self._smtp_sessions.add(session)  # closed by stop()
            return session

        sock = bind(listen)
        # asyncio listens again with its own backlog (100 unless told).
        server = await asyncio.get_running_loop().create_server(
            factory, sock=sock, backlog=LISTEN_BACKLOG
        )
        return sock, server

    async def _start_smtp(self) -> None:
        settings = self.runtime.settings
        handler = MxHandler(self.runtime.incoming, self.runtime.limiter, settings)
        options = await self._smtp_options()
        self.smtp_socket, self._smtp = await self._listen_smtp(
            settings.smtp.listen, lambda: MailfleetSMTP(handler, **options)
        )

    async def _start_submission(self) -> None:
        runtime = self.runtime
        smtp = runtime.settings.smtp
        handler = SubmissionHandler(
            runtime.sending, runtime.accounts, runtime.limiter, runtime.settings
        )
        options = await self._smtp_options()
        self.submission_socket, self._submission = await self._listen_smtp(
            smtp.submission_listen,
            lambda: SubmissionSMTP(
                handler,
                insecure_auth_on_loopback=smtp.insecure_auth_on_loopback,
                service="submission",
                **options,
            ),
        )

    async def stop(self) -> None:
        listeners = [s for s in (self._smtp, self._submission) if s is not None]
        for listener in listeners:
            listener.close()
        for session in list(self._smtp_sessions):
            if session.transport is not None:
                session.transport.close()
        for listener in listeners:
            await listener.wait_closed()
        self._smtp = self._submission = None
        if self._http is not None and self._http_task is not None:
            # Sockets and long polls end now (1012, or an empty answer) rather
            # than hold the graceful shutdown for its whole timeout.
            await self.runtime.feed.close()
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
            self._http = None
        if self._operations is not None and self._operations_task is not None:
            self._operations.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._operations_task
            self._operations = None
        if self.worker_in is not None:
            await self.worker_in.stop()
        if self.blob_sweeper is not None:
            await self.blob_sweeper.stop()
        if self.worker_out is not None:
            await self.worker_out.stop()
        for sock in (
            self.http_socket,
            self.smtp_socket,
            self.submission_socket,
            self.operations_socket,
        ):
            if sock is not None:
                sock.close()
        await self.runtime.close()
