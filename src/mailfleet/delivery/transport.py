"""Getting one message to one destination domain: MX lookup, fallback from
host to host, connection reuse, and a per-destination connection limit.

RFC 5321 section 5.1: hosts are tried in MX preference order, each of its
addresses in turn; a host that cannot be reached or answers its greeting
with an error is skipped for the next. Once a host has taken the
transaction, its answers are final for this attempt. A host whose STARTTLS
handshake fails is retried once in plain text (opportunistic TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from mailfleet.config import DeliverySettings
from mailfleet.delivery.mx import (
    MxResolver,
    NoDestination,
    NullMx,
    TemporaryDnsFailure,
    is_public_address,
)
from mailfleet.delivery.smtp_client import (
    Reply,
    SmtpConnection,
    SmtpError,
    TlsFailed,
    opportunistic_tls_context,
)

log = logging.getLogger("mailfleet.worker_out")


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What became of one recipient in one attempt."""

    status: str  # "delivered" | "temporary" | "permanent"
    code: str  # RFC 3463 enhanced status code
    detail: str  # the remote reply or our reason, one line
    remote_mta: str | None = None

    @classmethod
    def of_reply(cls, reply: Reply, host: str) -> RecipientOutcome:
        status = "delivered" if reply.ok else "temporary" if reply.temporary else "permanent"
        return cls(status, reply.status(), str(reply), host)


class SmtpTransport:
    def __init__(self, resolver: MxResolver, helo: str, settings: DeliverySettings) -> None:
        self.resolver = resolver
        self.helo = helo
        self.settings = settings
        self._tls = opportunistic_tls_context()
        # Per destination domain: (its semaphore, deliveries holding or
        # waiting for it). Dropped when the count falls to zero, so a worker
        # that has delivered to millions of domains keeps only the busy ones.
        self._limits: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._idle: defaultdict[str, list[tuple[float, SmtpConnection]]] = defaultdict(list)
        self._reaper: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle = [c for pool in self._idle.values() for _, c in pool]
        self._idle.clear()
        await asyncio.gather(*(c.quit() for c in idle))

    async def deliver(
        self, domain: str, mail_from: str, recipients: list[str], message: bytes
    ) -> dict[str, RecipientOutcome]:
        """One attempt for ``recipients`` (all at ``domain``)."""
        limit, users = self._limits.get(
            domain, (asyncio.Semaphore(self.settings.connections_per_destination), 0)
        )
        self._limits[domain] = (limit, users + 1)
        try:
            async with limit:
                return await self._deliver(domain, mail_from, recipients, message)
        finally:
            limit, users = self._limits[domain]
            if users == 1:
                del self._limits[domain]
            else:
                self._limits[domain] = (limit, users - 1)

    async def _deliver(
        self, domain: str, mail_from: str, recipients: list[str], message: bytes
    ) -> dict[str, RecipientOutcome]:
        def everyone(status: str, code: str, detail: str) -> dict[str, RecipientOutcome]:
            return {r: RecipientOutcome(status, code, detail) for r in recipients}

        reused = self._take_idle(domain)
        if reused is not None:
            try:
                return await self._transaction(reused, domain, mail_from, recipients, message)
            except SmtpError as exc:
                reused.close()
                if reused.data_sent:
                    return everyone("temporary", "4.4.2", f"{reused.host}: {exc}")
                # The peer may have dropped the idle connection: start afresh.
                log.info("reused connection to %s failed (%s); reconnecting", reused.host, exc)
        try:
            destinations = await self.resolver.resolve(domain)
        except (NullMx, NoDestination) as exc:
            return everyone("permanent", exc.status, str(exc))
        except TemporaryDnsFailure as exc:
            return everyone("temporary", exc.status, str(exc))

        last = RecipientOutcome("temporary", "4.4.1", f"no MX host of {domain} answered")
        internal: list[str] = []
        for destination in destinations:
            try:
                addresses = await self.resolver.addresses(destination.host)
            except (NoDestination, TemporaryDnsFailure) as exc:
                last = RecipientOutcome("temporary", "4.4.3", str(exc))
                continue
            if not destination.routed and not self.settings.allow_private_destinations:
                public = [a for a in addresses if is_public_address(a)]
                if not public:
                    detail = f"{destination.host} of {domain} has only non-public addresses"
                    log.warning("%s: %s", domain, detail)
                    internal.append(detail)
                    continue
                addresses = public
            for address in addresses:
                try:
                    connection = await self._connect(address, destination.port, destination.host)
                except SmtpError as exc:
                    log.info("%s (%s): %s", destination.host, address, exc)
                    code = exc.reply.status() if exc.reply else "4.4.1"
                    if not code.startswith("4"):
                        code = "4.4.1"  # another host may still take it
                    last = RecipientOutcome("temporary", code, str(exc), destination.host)
                    continue
                try:
                    return await self._transaction(
                        connection, domain, mail_from, recipients, message
                    )
                except SmtpError as exc:
                    connection.close()
                    # The session broke mid-transaction: nothing is known
                    # delivered, so the whole attempt is retried later.
                    return everyone("temporary", "4.4.2", f"{destination.host}: {exc}")
        if internal and len(internal) == len(destinations):
            # Every MX points inside: never ours to reach, retrying will not help.
            return everyone("permanent", "5.4.4", "; ".join(internal))
        return {r: last for r in recipients}

    async def _connect(self, address: str, port: int, host: str) -> SmtpConnection:
        timeouts = {
            "connect_timeout": self.settings.connect_timeout_seconds,
            "command_timeout": self.settings.command_timeout_seconds,
        }
        try:
            return await SmtpConnection.open(
                address, port, host=host, helo=self.helo, tls_context=self._tls, **timeouts
            )
        except TlsFailed as exc:
            log.info("%s: %s; retrying without TLS", host, exc)
            return await SmtpConnection.open(
                address, port, host=host, helo=self.helo, tls_context=None, **timeouts
            )

    async def _transaction(
        self,
        connection: SmtpConnection,
        domain: str,
        mail_from: str,
        recipients: list[str],
        message: bytes,
    ) -> dict[str, RecipientOutcome]:
        host = connection.host
        limit = connection.max_size
        if limit is not None and len(message) > limit:
            await self._park(domain, connection)
            detail = f"{host} accepts at most {limit} bytes; the message has {len(message)}"
            return {r: RecipientOutcome("permanent", "5.3.4", detail, host) for r in recipients}
        needs_utf8 = not (mail_from.isascii() and all(r.isascii() for r in recipients))
        if needs_utf8 and "SMTPUTF8" not in connection.extensions:
            await self._park(domain, connection)
            detail = f"{host} does not support SMTPUTF8, needed for these addresses"
            return {r: RecipientOutcome("permanent", "5.6.7", detail, host) for r in recipients}
        result = await connection.send(mail_from, recipients, message)
        outcomes: dict[str, RecipientOutcome] = {}
        for recipient in recipients:
            reply = result.recipients[recipient]
            if reply.ok and result.data is not None:
                reply = result.data
            outcomes[recipient] = RecipientOutcome.of_reply(reply, host)
        if result.data is not None and not result.data.ok:
            await connection.rset()
        await self._park(domain, connection)
        return outcomes

    def _take_idle(self, domain: str) -> SmtpConnection | None:
        pool = self._idle.get(domain)
        while pool:
            _, connection = pool.pop()
            if connection.is_open:
                return connection
        return None

    async def _park(self, domain: str, connection: SmtpConnection) -> None:
        """Keeps a healthy connection for the next message to ``domain``."""
        if self.settings.idle_connection_seconds <= 0 or not connection.is_open:
            await connection.quit()
            return
        self._idle[domain].append((time.monotonic(), connection))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="worker-out idle connections")

    async def _reap(self) -> None:
        while self._idle:
            await asyncio.sleep(min(1.0, self.settings.idle_connection_seconds))
            deadline = time.monotonic() - self.settings.idle_connection_seconds
            for domain in list(self._idle):
                keep = []
                for parked_at, connection in self._idle[domain]:
                    if parked_at < deadline or not connection.is_open:
                        await connection.quit()
                    else:
                        keep.append((parked_at, connection))
                if keep:
                    self._idle[domain] = keep
                else:
                    del self._idle[domain]
