"""A remote mail server for outbound tests: aiosmtpd on a free loopback port,
in the test's event loop, answering as each test scripts it and recording
what it was sent, when, and over how many connections.

    peer = await SmtpPeer(rcpt=lambda address, n: "550 5.1.1 no" if ... else None).start()
    ...
    peer.accepted  # (mail_from, recipient, data) for each recipient that got 250 at DATA end
    await peer.stop()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from mailfleet.smtp.tls import self_signed, server_context


@dataclass
class Delivered:
    mail_from: str
    recipients: list[str]
    data: bytes
    tls: bool
    at: float = field(default_factory=time.monotonic)


class _Handler:
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.peer.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.peer.transactions.append(time.monotonic())
        self.peer.mail_options.append(list(options))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        count = self.peer.rcpt_counts[address] = self.peer.rcpt_counts.get(address, 0) + 1
        reply = self.peer.rcpt(address, count) if self.peer.rcpt else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peer.data_count += 1
        if self.peer.stall_data is not None and not self.peer.stall_data.is_set():
            self.peer.stalled.set()
            await self.peer.stall_data.wait()
        reply = self.peer.data(self.peer.data_count) if self.peer.data else None
        if reply:
            return reply
        if server.transport is None or server.transport.is_closing():
            return "421 4.4.2 gone"  # the client hung up: nothing was accepted
        self.peer.delivered.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.ssl is not None,
            )
        )
        return "250 2.0.0 OK queued"


class SmtpPeer:
    """``rcpt(address, n)`` and ``data(n)`` may return a reply to send instead
    of accepting (n counts from 1: the n-th RCPT for that address, the n-th
    DATA); ``stall_data``, while unset, holds every DATA without a reply."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        rcpt: Callable[[str, int], str | None] | None = None,
        data: Callable[[int], str | None] | None = None,
        tls_dir: Path | None = None,
        ident: str = "peer ESMTP",
        pipelining: bool = True,
        smtputf8: bool = True,
        size_limit: int = 33554432,
        port: int = 0,
    ) -> None:
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.size_limit = size_limit
        self.host = host
        self.port = port  # 0: any free one
        self.rcpt = rcpt
        self.data = data
        self.tls_dir = tls_dir
        self.ident = ident
        self.stall_data: asyncio.Event | None = None
        self.stalled = asyncio.Event()
        self.delivered: list[Delivered] = []
        self.transactions: list[float] = []  # when each MAIL FROM came
        self.mail_options: list[list[str]] = []
        self.rcpt_counts: dict[str, int] = {}
        self.data_count = 0
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self._server: asyncio.Server | None = None

    def accepted(self, recipient: str) -> list[Delivered]:
        return [d for d in self.delivered if recipient in d.recipients]

    async def start(self) -> SmtpPeer:
        tls = None
        if self.tls_dir is not None:
            cert, key = self_signed(self.tls_dir, "peer.test")
            tls = server_context(cert, key)
        peer = self

        class CountingSMTP(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if not getattr(self, "_counted", False):
                    self._counted = True
                    peer.connections += 1
                    peer.open_connections += 1
                    peer.max_open_connections = max(
                        peer.max_open_connections, peer.open_connections
                    )
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                if getattr(self, "_counted", False):
                    self._counted = False
                    peer.open_connections -= 1
                super().connection_lost(exc)

        def factory() -> SMTP:
            return CountingSMTP(
                _Handler(self),
                hostname="peer.test",
                ident=self.ident,
                decode_data=False,
                enable_SMTPUTF8=self.smtputf8,
                data_size_limit=self.size_limit,
                tls_context=tls,
                require_starttls=False,
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
