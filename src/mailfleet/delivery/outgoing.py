"""The ``worker-out`` role (DESIGN.md, "Send", step 6): consume ``outgoing``,
one item per sent message and destination domain; filter, DKIM-sign, deliver;
retry temporary failures with exponential backoff; bounce permanent failures
and expired mail with a DSN in the sender's Inbox.

Where each recipient stands lives on the sender's Sent copy (the metadata
store's ``deliveries``), written as soon as the remote server answers. That
record, not the queue item, decides who is still to be tried, so a worker
killed mid-delivery and restarted never sends again to a recipient whose
server already said 250 (the window between that 250 and our write is the
one RFC 5321 section 6.1 duplicate every MTA has).

An attempt first claims the recipients it will try on that record
(``claim_deliveries``, until the attempt's deadline, under the queue's
lease) and sends only to those. The queue dedupes a send for a bounded
window only, so the outbox sweep may queue a send again beside an item
still waiting (decision 0009): whichever attempt claims a recipient first
owns it, and an item whose recipients are all done or owned elsewhere is
acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from mailfleet.config import DeliverySettings
from mailfleet.delivery.incoming import Envelope, IncomingService
from mailfleet.delivery.outbox import OUTGOING, queue_outgoing
from mailfleet.delivery.smtp_client import normalize_crlf
from mailfleet.delivery.transport import RecipientOutcome, SmtpTransport
from mailfleet.ids import now_ms
from mailfleet.logs import TRACE_KEY, get_logger, trace_of
from mailfleet.metrics import BOUNCES, count_delivery
from mailfleet.proto.compose import new_message_id
from mailfleet.proto.dkim import DkimError, sign
from mailfleet.proto.dsn import FailedRecipient, build_dsn
from mailfleet.storage.errors import BackendUnavailable, BlobMissing
from mailfleet.storage.interfaces import (
    BlobStore,
    Delivery,
    DirectoryStore,
    DkimKey,
    MailboxStore,
    Queue,
    QueueItem,
)

KEY_CACHE_SECONDS = 60
IDLE_POLL_SECONDS = 1.0
log = logging.getLogger("mailfleet.worker_out")
hops = get_logger("mailfleet.worker_out")


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """A content filter's answer on an outgoing message: None to send it, or
    the reason it is refused (the sender gets a bounce saying so)."""

    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    delay_seconds: float
    reason: str


# The virus and spam filters of a later issue plug in here.
OutgoingFilter = Callable[[bytes, str, Sequence[str]], Awaitable[FilterVerdict]]


class OutgoingService:
    def __init__(
        self,
        directory: DirectoryStore,
        mailboxes: MailboxStore,
        blobs: BlobStore,
        queue: Queue,
        incoming: IncomingService,
        transport: SmtpTransport,
        settings: DeliverySettings,
        hostname: str,
        filters: Sequence[OutgoingFilter] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.directory = directory
        self.mailboxes = mailboxes
        self.blobs = blobs
        self.queue = queue
        self.incoming = incoming
        self.transport = transport
        self.settings = settings
        self.hostname = hostname
        self.filters = list(filters)
        self._rng = rng or random.Random()
        self._keys: dict[str, tuple[float, DkimKey | None]] = {}

    def retry_delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` tries, with jitter
        so that mail deferred together does not come back together."""
        schedule = self.settings.retry_schedule_seconds
        base = schedule[min(attempts, len(schedule)) - 1] * self.settings.time_scale
        return base * (1 + self._rng.uniform(-self.settings.jitter, self.settings.jitter))

    def expired(self, item: QueueItem) -> bool:
        age_ms = now_ms() - item.enqueued_at
        return age_ms > self.settings.max_age_seconds * self.settings.time_scale * 1000

    async def process(self, item: QueueItem, *, deadline_ms: int | None = None) -> Retry | None:
        """One attempt for one item, to end by ``deadline_ms`` (the worker's
        attempt timeout). Returns None when the item is done (every
        recipient it names is delivered, bounced, or being tried by another
        attempt that claimed it), else when and why to try again."""
        payload = item.payload
        account_id = int(payload["account_id"])
        message_id = int(payload["message_id"])
        recipients = [str(r) for r in payload["recipients"]]
        now = now_ms()
        until = deadline_ms or now + int(self.settings.attempt_timeout_seconds * 1000)
        claimed = await self.mailboxes.claim_deliveries(
            account_id, message_id, recipients, claimant=item.id, now_ms=now, until_ms=until
        )
        pending = [d.email for d in claimed]
        if not pending:
            if await self.mailboxes.get_deliveries(account_id, message_id):
                return None  # done, or another attempt owns them
            # A Sent copy deleted for good takes its record along: then
            # every recipient on the item is tried, unclaimed.
            pending = recipients
        try:
            return await self._attempt(item, pending)
        except Exception:
            if claimed:
                # Let the recipients go as they stood, so that another item
                # for them (a retry_now copy) need not wait out the claim;
                # if this fails too, the claim runs out at the deadline.
                with contextlib.suppress(Exception):
                    await self.mailboxes.set_deliveries(account_id, message_id, claimed)
            raise

    async def _attempt(self, item: QueueItem, pending: list[str]) -> Retry | None:
        """Sends to ``pending`` (claimed) and records where each stands."""
        payload = item.payload
        account_id = int(payload["account_id"])
        message_id = int(payload["message_id"])
        domain = str(payload["domain"])
        mail_from = str(payload["mail_from"])
        raw = normalize_crlf(await self.blobs.get(str(payload["raw_hash"])))

        outcomes: dict[str, RecipientOutcome]
        refusal = await self._filter(raw, mail_from, pending)
        if refusal is not None:
            outcomes = {r: RecipientOutcome("permanent", "5.7.1", refusal) for r in pending}
        else:
            signed = await self._sign(raw, mail_from)
            outcomes = await self.transport.deliver(domain, mail_from, pending, signed)

        expired = self.expired(item)
        delay = self.retry_delay(item.attempts)
        next_attempt = now_ms() + int(delay * 1000)
        failed: list[FailedRecipient] = []
        updates: list[Delivery] = []
        for recipient, outcome in outcomes.items():
            if outcome.status == "delivered":
                updates.append(Delivery(recipient, "delivered", outcome.detail))
            elif outcome.status == "permanent" or expired:
                code = outcome.code if outcome.status == "permanent" else "4.4.7"
                detail = outcome.detail
                if outcome.status != "permanent":
                    detail = f"gave up after {item.attempts} attempts; last error: {detail}"
                failed.append(FailedRecipient(recipient, code, detail, outcome.remote_mta))
                updates.append(Delivery(recipient, "bounced", detail))
            else:
                updates.append(Delivery(recipient, "deferred", outcome.detail, next_attempt))
        if failed:
            # Before the statuses: a crash in between re-tries these
            # recipients, fails them again, and the DSN's queue id (from
            # the same recipients) keeps it from arriving twice.
            await self._bounce(item, raw, mail_from, failed)
        await self.mailboxes.set_deliveries(account_id, message_id, updates)
        trace = trace_of(payload)
        for update in updates:
            count_delivery(update.status, domain)
            # worker-out's hop (decision 0029): one line per recipient.
            outcome = outcomes[update.email]
            hops.info(
                update.status,
                trace_id=trace,
                message_id=message_id,
                item=item.id,
                recipient=update.email,
                remote=outcome.remote_mta or "",
                code=outcome.code,
                reply=update.detail,
                attempt=item.attempts,
                **({"next_attempt_ms": update.next_attempt_at} if update.next_attempt_at else {}),
            )
        deferred = [u for u in updates if u.status == "deferred"]
        if deferred:
            return Retry(delay, "; ".join(dict.fromkeys(u.detail for u in deferred)))
        return None

    async def requeue_stale(self) -> int:
        """Queues again the sends that a crash left between the Sent copy and
        their ``outgoing`` items (the recipients' ``queued`` rows are the
        outbox). Returns how many messages were looked at."""
        received_before = now_ms() - int(self.settings.stale_after_seconds * 1000)
        stale = await self.mailboxes.stale_sends(received_before, limit=1000)
        # The queue remembers dedupe keys for a window only, and a key it
        # remembers may name an item that is gone: the sweep's puts carry
        # their round instead. A send whose item still waits gets a second
        # one, and the recipient claims keep the two from delivering side by
        # side (the later of them finds nothing left and is acked).
        sweep_ms = max(1, int(self.settings.sweep_interval_seconds * 1000))
        round_key = f":sweep{now_ms() // sweep_ms}"
        for send in stale:
            await queue_outgoing(
                self.queue,
                account_id=send.account_id,
                message_id=send.message_id,
                raw_hash=send.raw_hash,
                mail_from=send.mail_from,
                recipients=send.recipients,
                round_key=round_key,
            )
        return len(stale)

    async def _filter(self, raw: bytes, mail_from: str, recipients: list[str]) -> str | None:
        for check in self.filters:
            verdict = await check(raw, mail_from, recipients)
            if verdict.refused:
                return f"message refused by a content filter: {verdict.refused}"
        return None

    async def _signing_key(self, domain: str) -> DkimKey | None:
        """The domain's newest key, looked up once a minute: every message
        needs it, and a new key is published in DNS long before it is used."""
        cached = self._keys.get(domain)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        keys = await self.directory.dkim_keys(domain)
        key = keys[0] if keys else None
        self._keys[domain] = (time.monotonic() + KEY_CACHE_SECONDS, key)
        return key

    async def _sign(self, raw: bytes, mail_from: str) -> bytes:
        domain = mail_from.rpartition("@")[2].lower()
        key = await self._signing_key(domain)
        if key is None:
            return raw
        try:
            return await asyncio.to_thread(
                sign, raw, domain=domain, selector=key.selector, private_key_pem=key.private_key_pem
            )
        except DkimError as exc:
            # Unsigned mail may land in spam; undelivered mail helps nobody.
            log.warning("cannot DKIM-sign mail from %s: %s; sending unsigned", mail_from, exc)
            return raw

    async def _bounce(
        self, item: QueueItem, raw: bytes, mail_from: str, failed: list[FailedRecipient]
    ) -> None:
        if not mail_from:
            return  # never bounce a bounce (RFC 5321 section 4.5.5)
        now = datetime.now(UTC)
        dsn = build_dsn(
            reporting_mta=self.hostname,
            postmaster=f"postmaster@{mail_from.rpartition('@')[2]}",
            original_mail_from=mail_from,
            original_headers=raw,  # build_dsn keeps the header section
            recipients=failed,
            arrival_date=datetime.fromtimestamp(item.enqueued_at / 1000, UTC),
            message_id=new_message_id(self.hostname),
            date=now,
        )
        who = "\n".join(sorted(f.email for f in failed))
        digest = hashlib.sha256(f"{item.id}\n{who}".encode()).hexdigest()[:24]
        envelope = Envelope(
            mail_from="",
            recipients=[mail_from],
            client_ip="127.0.0.1",
            helo=self.hostname,
            tls=True,
        )
        await self.incoming.accept(
            envelope, dsn, queue_id=f"dsn-{digest}", ours=True, trace=trace_of(item.payload) or None
        )
        BOUNCES.inc()


class OutgoingWorker:
    """Consumes ``outgoing`` with up to ``concurrency`` deliveries in flight."""

    def __init__(self, service: OutgoingService, queue: Queue, settings: DeliverySettings) -> None:
        self.service = service
        self.queue = queue
        self.settings = settings
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-out")
        self._sweeper = asyncio.create_task(self._sweep(), name="worker-out sweep")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._task, self._sweeper, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.service.transport.close()

    async def _run(self) -> None:
        while not self._stopping:
            free = self.settings.concurrency - len(self._running)
            if free <= 0:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                items = await self.queue.fetch(OUTGOING, limit=free, timeout=IDLE_POLL_SECONDS)
            except BackendUnavailable as exc:
                log.warning("outgoing queue unavailable: %s", exc)
                await asyncio.sleep(1)
                continue
            for item in items:
                task = asyncio.create_task(self.handle(item), name=f"deliver {item.id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _sweep(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await self.service.requeue_stale()
            except BackendUnavailable as exc:
                log.warning("sweep for unqueued sends failed: %s", exc)

    async def handle(self, item: QueueItem) -> None:
        # What is logged while the item is tried (warnings of stdlib loggers
        # too) names its mail's trace.
        with structlog.contextvars.bound_contextvars(**{TRACE_KEY: trace_of(item.payload)}):
            await self._handle(item)

    async def _handle(self, item: QueueItem) -> None:
        timeout = self.settings.attempt_timeout_seconds
        deadline_ms = now_ms() + int(timeout * 1000)
        try:
            async with asyncio.timeout(timeout):
                retry = await self.service.process(item, deadline_ms=deadline_ms)
        except BlobMissing as exc:
            await self.queue.dead_letter(item, error=f"raw message missing: {exc}")
            return
        except (BackendUnavailable, TimeoutError) as exc:
            reason = "attempt timed out" if isinstance(exc, TimeoutError) else str(exc)
            await self._retry(item, reason)
            return
        except Exception as exc:  # a bug or an unforeseen input: keep the mail, say why
            log.exception("cannot deliver outgoing %s", item.id)
            if item.attempts >= self.settings.max_attempts_for_bad_items:
                await self.queue.dead_letter(item, error=f"{type(exc).__name__}: {exc}")
            else:
                await self._retry(item, f"{type(exc).__name__}: {exc}")
            return
        if retry is None:
            await self.queue.ack(item)
        else:
            # The reason is on the Sent copy's delivery rows already.
            await self.queue.retry(item, delay_seconds=retry.delay_seconds)

    async def _retry(self, item: QueueItem, reason: str) -> None:
        """After an attempt that failed in our code or our backends: the
        queue keeps no reason, so the log says it."""
        delay = self.service.retry_delay(item.attempts)
        log.warning("outgoing %s: %s; trying again in %.0f s", item.id, reason, delay)
        with contextlib.suppress(BackendUnavailable):
            await self.queue.retry(item, delay_seconds=delay)
