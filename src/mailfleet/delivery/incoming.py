"""The receive flow (DESIGN.md, "Receive"): accept a mail from the MX durably,
then (``worker-in``) turn it into one stored copy per hosted recipient.

Accepting writes the raw message to the blob store and a reference on the
``incoming`` queue; only when both are durable may the MX answer 250.
Processing is idempotent: the copy of queue item Q for recipient R carries the
ingest key ``in:Q:R``, so a redelivered item stores nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, cast

from mailfleet.delivery.local import (
    StoredParts,
    judge_per_account,
    received_copy,
    spam_fields,
    spam_reasons,
    store_parts,
)
from mailfleet.filters import FilterResult, FilterUnavailable, MailToCheck, Verdict
from mailfleet.filters.bayes import BayesFilter
from mailfleet.filters.pipeline import FilterPipeline, Outcome
from mailfleet.filters.sender_auth import author_domains
from mailfleet.ids import new_id, now_ms
from mailfleet.logs import TRACE_KEY, get_logger, trace_of
from mailfleet.metrics import FILTER_VERDICTS
from mailfleet.proto.addresses import Address, AddressError, mailbox_key, normalize_email
from mailfleet.proto.authres import remove_claims_of
from mailfleet.proto.mime import ParsedMessage, parse_message
from mailfleet.proto.smtp_data import message_id_field
from mailfleet.storage.errors import BackendUnavailable, BlobMissing
from mailfleet.storage.interfaces import (
    BlobStore,
    Cache,
    DirectoryStore,
    MailboxStore,
    NewMessage,
    QuarantinedMail,
    Queue,
    QueueItem,
)

INCOMING = "incoming"
RECIPIENT_CACHE_SECONDS = 30
# Deliveries of a mail that fails in a way not foreseen before it is kept in
# ``error`` for an operator (``BackendUnavailable`` waits as long as the queue
# allows; a missing raw mail goes at once).
UNFORESEEN_TRIES = 3
log = logging.getLogger("mailfleet.worker_in")
hops = get_logger("mailfleet.worker_in")
accepted = get_logger("mailfleet.smtp_in")
bounces = get_logger("mailfleet.worker_out")  # accept(ours=True): worker-out's DSNs


class RecipientVerdict:
    LOCAL = "local"  # a hosted mailbox: accept
    UNKNOWN = "unknown"  # hosted domain, no such mailbox: 550 5.1.1
    INVALID = "invalid"  # not an address: 501/553
    FOREIGN = "foreign"  # not ours: relay, which only authenticated clients may


@dataclass(frozen=True, slots=True)
class Mailbox:
    account_id: int
    inbox_id: int
    junk_id: int
    email: str


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str
    recipients: list[str]
    client_ip: str
    helo: str
    tls: bool


class IncomingService:
    def __init__(
        self,
        directory: DirectoryStore,
        mailboxes: MailboxStore,
        blobs: BlobStore,
        queue: Queue,
        hostname: str,
        cache: Cache,
        filters: FilterPipeline,
        bayes: BayesFilter | None = None,
    ) -> None:
        self.directory = directory
        self.mailboxes = mailboxes
        self.blobs = blobs
        self.queue = queue
        self.hostname = hostname
        self.cache = cache
        self.filters = filters
        # Per recipient: each account's own statistics (decision 0022).
        self.bayes = bayes

    async def check_recipient(self, address: str) -> tuple[str, str]:
        """(verdict, normalized mailbox address)."""
        try:
            email = normalize_email(address)
        except AddressError:
            return RecipientVerdict.INVALID, address
        mailbox = await self.mailbox(mailbox_key(email))
        if mailbox is not None:
            return RecipientVerdict.LOCAL, mailbox.email
        if await self.directory.get_domain(email.rpartition("@")[2]) is None:
            return RecipientVerdict.FOREIGN, email
        return RecipientVerdict.UNKNOWN, email

    async def hosted_among(self, domains: set[str]) -> frozenset[str]:
        """Those of ``domains`` that we host, each answer cached like a
        recipient's (the sender checks ask for every mail)."""
        hosted = set()
        for domain in domains:
            cache_key = f"hosted:{domain}"
            cached = await self.cache.get(cache_key)
            if cached is None:
                cached = b"1" if await self.directory.get_domain(domain) is not None else b"0"
                await self.cache.set(cache_key, cached, RECIPIENT_CACHE_SECONDS)
            if cached == b"1":
                hosted.add(domain)
        return frozenset(hosted)

    async def mail_to_check(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        client_ip: str,
        helo: str,
        parsed: ParsedMessage | None = None,
        prior: dict[str, FilterResult] | None = None,
    ) -> MailToCheck:
        """An inbound mail as the filters see it, with the hosted domains among
        its sender's (which must prove themselves: filters/sender_auth.py)
        when a filter still to run (not in ``prior``) looks at them."""
        sender_domains: set[str] = set()
        if self.filters.checks_senders(prior):
            sender_domains.update(d for d in author_domains(raw) if d)
            envelope_domain = mail_from.rpartition("@")[2].strip("<> ").lower().rstrip(".")
            if envelope_domain:
                sender_domains.add(envelope_domain)
        return MailToCheck(
            raw=raw,
            mail_from=mail_from,
            recipients=recipients,
            direction="in",
            client_ip=client_ip,
            helo=helo,
            hosted_domains=await self.hosted_among(sender_domains),
            parsed_message=parsed,
        )

    async def check_at_smtp(self, envelope: Envelope, raw: bytes) -> dict[str, FilterResult]:
        """The filters that run before the MX answers DATA (sender
        authentication), by filter name: ``filters.pipeline.refusal`` says
        whether to refuse, ``accept`` takes them along so that worker-in does not ask
        again. Raises FilterUnavailable or StorageError (the caller accepts
        the mail unchecked then: worker-in checks it)."""
        if not self.filters.smtp_filters:
            return {}
        mail = await self.mail_to_check(
            raw,
            mail_from=envelope.mail_from,
            recipients=tuple(envelope.recipients),
            client_ip=envelope.client_ip,
            helo=envelope.helo,
        )
        return await self.filters.check_at_smtp(mail)

    async def mailbox(self, key: str) -> Mailbox | None:
        """The hosted mailbox an address key names, cached for
        RECIPIENT_CACHE_SECONDS: RCPT and worker-in need it for every mail.
        Misses are never cached, so an account made a moment ago gets mail;
        one disabled meanwhile may receive for the rest of the window."""
        cache_key = f"mailbox2:{key}"
        cached = await self.cache.get(cache_key)
        if cached is not None:
            account_id, inbox_id, junk_id, email = cached.decode().split(" ", 3)
            return Mailbox(int(account_id), int(inbox_id), int(junk_id), email)
        account = await self.directory.get_account_by_email(key)
        if account is None or account.disabled:
            return None
        inbox = await self.mailboxes.folder_by_role(account.id, "inbox")
        junk = await self.mailboxes.folder_by_role(account.id, "junk")
        found = Mailbox(account.id, inbox.id, junk.id, account.email)
        await self.cache.set(
            cache_key,
            f"{found.account_id} {found.inbox_id} {found.junk_id} {found.email}".encode(),
            RECIPIENT_CACHE_SECONDS,
        )
        return found

    def trace_headers(self, envelope: Envelope, queue_id: str, now: datetime) -> bytes:
        """Return-Path and Received (RFC 5321 sections 4.4), prepended to the mail."""
        protocol = "ESMTPS" if envelope.tls else "ESMTP"
        helo = "".join(c for c in envelope.helo if c.isprintable() and c not in "()")[:255]
        lines = [
            f"Return-Path: <{envelope.mail_from}>",
            f"Received: from {helo or 'unknown'} ([{envelope.client_ip}])",
            f"\tby {self.hostname} (mailfleet) with {protocol} id {queue_id}",
        ]
        if len(envelope.recipients) == 1:
            lines.append(f"\tfor <{envelope.recipients[0]}>; {format_datetime(now)}")
        else:
            lines[-1] += f"; {format_datetime(now)}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    async def accept(
        self,
        envelope: Envelope,
        raw: bytes,
        *,
        queue_id: str | None = None,
        checked: dict[str, FilterResult] | None = None,
        ours: bool = False,
        trace: str | None = None,
    ) -> str:
        """Stores the mail durably and queues it; returns the queue id.
        Raises BackendUnavailable when either write fails (the MX says 451).
        A caller that may repeat itself (worker-out's bounces) passes its
        own ``queue_id``: the same id is queued and delivered only once.
        ``checked``: what ``check_at_smtp`` found, kept for worker-in.
        ``ours``: a mail we made (a bounce from worker-out, sent in the name
        of the sender's postmaster on a hosted domain): the sender checks
        have nothing to prove on it, and would call it forged.
        ``trace``: the mail's correlation id (decision 0029), carried on the
        item for worker-in; by default its queue id (a received mail's
        transaction has no other id), a bounce passes its send's."""
        now = datetime.now(UTC)
        # Only a caller's own id can come again: a fresh one needs no dedupe
        # key (and the MX's hot path writes none).
        dedupe_key = queue_id
        queue_id = queue_id or f"{new_id():x}"
        raw = remove_claims_of(raw, self.hostname)
        blob = await self.blobs.put(self.trace_headers(envelope, queue_id, now) + raw)
        trace = trace or queue_id
        # A mail's first hop (decision 0029), then the queue's "queued".
        (bounces if ours else accepted).info(
            "dsn" if ours else "received",
            trace_id=trace,
            queue_id=queue_id,
            client_ip=envelope.client_ip,
            mail_from=envelope.mail_from,
            rcpt=len(envelope.recipients),
            message_id_header=message_id_field(raw),
            size=len(raw),
        )
        payload: dict[str, object] = {
            "queue_id": queue_id,
            "raw_hash": blob.hash,
            "raw_size": blob.size,
            "mail_from": envelope.mail_from,
            "recipients": envelope.recipients,
            "received_at": int(now.timestamp() * 1000),
            "client_ip": envelope.client_ip,
            "helo": envelope.helo,
            TRACE_KEY: trace,
        }
        if ours:
            checked = {f.name: FilterResult() for f in self.filters.smtp_filters}
        if checked:
            payload["checked"] = {name: r.to_json() for name, r in checked.items()}
        await self.queue.put(INCOMING, payload, dedupe_key=dedupe_key)
        return queue_id

    # -- worker-in ------------------------------------------------------------------

    async def process(self, item: QueueItem) -> int:
        """Delivers one queued mail; returns the number of new copies stored."""
        copies = await self.prepare(item)
        ids = await self.mailboxes.store_messages(copies)
        _log_stored(item, copies, ids)
        return sum(1 for copy, stored in zip(copies, ids, strict=True) if copy.id == stored)

    async def prepare(self, item: QueueItem) -> list[NewMessage]:
        """Parses one queued mail and stores its parts; returns the copies to
        store, one per hosted recipient (not stored yet: ``process`` stores
        them, or the worker stores a whole batch's copies in one call)."""
        payload = item.payload
        raw = await self.blobs.get(payload["raw_hash"])
        parsed = parse_message(raw)
        if parsed.defects:
            log.info("mail %s has defects: %s", payload["queue_id"], "; ".join(parsed.defects))
        recipients = tuple(dict.fromkeys(payload["recipients"]))
        # Before anything is stored: a filter that cannot answer now
        # (FilterUnavailable) sends the item back to wait, unscanned mail
        # never reaches a folder.
        checked = cast(dict[str, dict[str, Any]], payload.get("checked") or {})
        prior = {name: FilterResult.from_json(data) for name, data in checked.items()}
        mail = await self.mail_to_check(
            raw,
            mail_from=str(payload["mail_from"]),
            recipients=recipients,
            client_ip=str(payload.get("client_ip", "")),
            helo=str(payload.get("helo", "")),
            parsed=parsed,
            prior=prior,
        )
        outcome = await self.filters.run(mail, prior)
        if outcome.quarantined:
            # Kept whole, in no folder, until an administrator decides
            # (delivery/quarantine.py); its parts are not stored meanwhile.
            await self._hold(payload, parsed, recipients, outcome)
            return []
        parts = await store_parts(self.blobs, parsed)
        mailboxes = []
        for email in recipients:
            mailbox = await self.mailbox(email)
            if mailbox is None:
                # Removed after we said 250; nothing to deliver to.
                log.warning("mail %s: %s has no mailbox any more", payload["queue_id"], email)
                continue
            mailboxes.append(mailbox)
        outcomes = await judge_per_account(
            self.filters,
            self.bayes,
            outcome,
            [m.account_id for m in mailboxes],
            subject=parsed.subject,
            sender=parsed.sender.email if parsed.sender else None,
            text=parsed.text,
            html=parsed.html,
        )
        copies = []
        for mailbox, own in zip(mailboxes, outcomes, strict=True):
            # Refused mail that was already accepted goes to Junk as well.
            folder_id = mailbox.inbox_id if own.verdict == Verdict.HAM else mailbox.junk_id
            FILTER_VERDICTS.labels(own.verdict.value).inc()
            copies.append(self._copy(mailbox, folder_id, payload, parsed, parts, spam_fields(own)))
        return copies

    async def _hold(
        self,
        payload: dict[str, object],
        parsed: ParsedMessage,
        recipients: tuple[str, ...],
        outcome: Outcome,
    ) -> None:
        queue_id = str(payload["queue_id"])
        FILTER_VERDICTS.labels(outcome.verdict.value).inc()
        entry = await self.directory.quarantine(
            QuarantinedMail(
                id=new_id(),
                ingest_key=f"in:{queue_id}",
                received_at=int(str(payload["received_at"])),
                quarantined_at=now_ms(),
                mail_from=str(payload["mail_from"]),
                recipients=recipients,
                client_ip=str(payload.get("client_ip", "")),
                helo=str(payload.get("helo", "")),
                sender=_shown(parsed.sender),
                subject=parsed.subject,
                raw_hash=str(payload["raw_hash"]),
                raw_size=int(str(payload["raw_size"])),
                verdict=outcome.verdict.value,
                score=outcome.score,
                reasons=spam_reasons(outcome.reasons),
                filter_headers=outcome.header_block(),
            )
        )
        why = "; ".join(f"{r.name} {r.detail}".strip() for r in entry.reasons if r.detail)
        hops.warning(
            "quarantined",
            trace_id=trace_of(payload, queue_id),
            queue_id=queue_id,
            quarantine_id=entry.id,
            verdict=entry.verdict,
            reasons=why,
        )

    async def release(self, entry: QuarantinedMail) -> list[str]:
        """Delivers a quarantined mail to its recipients' Inboxes, as worker-in
        would have, without the filters; the copies carry worker-in's ingest
        key, so repeating a release (or worker-in meeting the mail again)
        stores nothing twice. Answers the recipients it went to."""
        raw = await self.blobs.get(entry.raw_hash)
        parsed = await asyncio.to_thread(parse_message, raw)
        parts = await store_parts(self.blobs, parsed)
        payload: dict[str, object] = {
            "queue_id": entry.ingest_key.removeprefix("in:"),
            "received_at": entry.received_at,
            "raw_hash": entry.raw_hash,
            "raw_size": entry.raw_size,
        }
        spam = {
            "spam_verdict": entry.verdict,
            "spam_score": entry.score,
            "spam_reasons": entry.reasons,
            "filter_headers": entry.filter_headers,
        }
        copies, delivered = [], []
        for email in dict.fromkeys(entry.recipients):
            mailbox = await self.mailbox(mailbox_key(email))
            if mailbox is None:
                log.warning("quarantined %d: %s has no mailbox any more", entry.id, email)
                continue
            copies.append(self._copy(mailbox, mailbox.inbox_id, payload, parsed, parts, spam))
            delivered.append(mailbox.email)
        await self.mailboxes.store_messages(copies)
        return delivered

    def _copy(
        self,
        mailbox: Mailbox,
        folder_id: int,
        payload: dict[str, object],
        parsed: ParsedMessage,
        parts: StoredParts,
        spam: Mapping[str, Any],
    ) -> NewMessage:
        """One recipient's copy; ``spam``: the filters' verdict, score,
        reasons and header block (``NewMessage``'s spam fields)."""
        queue_id = str(payload["queue_id"])
        return received_copy(
            parsed,
            parts,
            account_id=mailbox.account_id,
            folder_id=folder_id,
            received_at=int(str(payload["received_at"])),
            ingest_key=f"in:{queue_id}",
            raw_hash=str(payload["raw_hash"]),
            raw_size=int(str(payload["raw_size"])),
            message_id_header=f"<{queue_id}@{self.hostname}>",
            **spam,
        )


class IncomingWorker:
    """The ``worker-in`` role: consumes ``incoming`` until stopped, a batch of
    up to ``batch`` items at a time (each held for the queue's lease)."""

    def __init__(
        self,
        service: IncomingService,
        queue: Queue,
        *,
        batch: int = 64,
        idle_wait: float = 1.0,
    ) -> None:
        self.service = service
        self.queue = queue
        self.batch = batch
        self.idle_wait = idle_wait
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-in")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                items = await self.queue.fetch(INCOMING, limit=self.batch, timeout=self.idle_wait)
            except BackendUnavailable as exc:
                log.warning("incoming queue unavailable: %s", exc)
                await asyncio.sleep(self.idle_wait)
                continue
            if items:
                await self.handle_batch(items)

    async def handle_batch(self, items: list[QueueItem]) -> None:
        """Prepares the items concurrently (their blob writes share commits),
        stores every copy of the batch in one ``store_messages`` call, then
        acks them with one call. An item that fails to prepare
        is retried or dead-lettered alone; if the shared store fails, each
        item goes through ``handle`` on its own, so one bad item cannot hold
        back the others."""
        prepared = await asyncio.gather(
            *(self.service.prepare(item) for item in items), return_exceptions=True
        )
        ready: list[tuple[QueueItem, list[NewMessage]]] = []
        failed: list[Awaitable[None]] = []
        for item, outcome in zip(items, prepared, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                failed.append(self._failed(item, outcome))
            else:
                ready.append((item, outcome))
        copies = [copy for _, item_copies in ready for copy in item_copies]
        try:
            ids = await self.service.mailboxes.store_messages(copies)
        except Exception:
            log.warning("batch store of %d copies failed; one item at a time", len(copies))
            await asyncio.gather(*failed, *(self.handle(item) for item, _ in ready))
            return
        stored = iter(ids)
        for item, item_copies in ready:
            _log_stored(item, item_copies, [next(stored) for _ in item_copies])
        await asyncio.gather(*failed, self.queue.ack_many([item for item, _ in ready]))

    async def handle(self, item: QueueItem) -> None:
        try:
            await self.service.process(item)
        except Exception as exc:
            await self._failed(item, exc)
            return
        await self.queue.ack(item)

    async def _failed(self, item: QueueItem, exc: Exception) -> None:
        if isinstance(exc, BlobMissing):
            await self.queue.dead_letter(item, error=f"raw message missing: {exc}")
        elif isinstance(exc, BackendUnavailable | FilterUnavailable):
            # On the last delivery the queue would dead-letter the retry with
            # no reason of ours: say why here (a retry keeps no reason).
            if item.attempts >= self.queue.policy(INCOMING).max_deliveries:
                error = f"gave up after {item.attempts} deliveries: {exc}"
                await self.queue.dead_letter(item, error=error)
            else:
                log.warning("incoming %s: %s; trying again", item.id, exc)
                await self.queue.retry(item, delay_seconds=min(300, 2**item.attempts))
        elif item.attempts < UNFORESEEN_TRIES:
            # Not foreseen: a driver's odd error in a backend's bad moment (a
            # primary killed mid-transaction) passes when tried again; a bug
            # or an input we cannot read repeats, and goes to ``error`` below.
            log.error(
                "incoming %s failed (delivery %d of %d before error); trying again",
                item.id, item.attempts, UNFORESEEN_TRIES, exc_info=exc,
            )  # fmt: skip
            await self.queue.retry(item, delay_seconds=2**item.attempts)
        else:  # a bug or an unforeseen input: keep the mail, say why
            log.error("cannot process incoming %s", item.id, exc_info=exc)
            await self.queue.dead_letter(item, error=f"{type(exc).__name__}: {exc}")


def _log_stored(item: QueueItem, copies: list[NewMessage], ids: list[int]) -> None:
    """worker-in's hop (decision 0029): one line per stored copy; ``again``
    when the copy was there already (a redelivered item)."""
    payload = item.payload
    queue_id = str(payload.get("queue_id", ""))
    trace = trace_of(payload, queue_id)
    for copy, stored in zip(copies, ids, strict=True):
        hops.info(
            "stored",
            trace_id=trace,
            queue_id=queue_id,
            account_id=copy.account_id,
            message_id=stored,
            folder="inbox" if copy.spam_verdict in (None, Verdict.HAM.value) else "junk",
            folder_id=copy.folder_id,
            **({"again": True} if stored != copy.id else {}),
        )


def _shown(address: Address | None) -> str:
    if address is None:
        return ""
    return f"{address.name} <{address.email}>" if address.name else address.email
