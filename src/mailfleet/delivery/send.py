"""The send flow (DESIGN.md, "Send"): rate limit, validate, compose, store the
sender's copy in Sent, deliver to hosted recipients directly, queue the rest on
``outgoing`` (one item per destination domain, attachments by reference).

Used by ``POST /v1/messages`` (``send``: composed here from a draft) and by
SMTP submission (``send_raw``: composed by the user's mail client). Both end in
``_store_and_queue``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mailfleet.config import LimitSettings
from mailfleet.delivery.abuse import OutboundAbuse, Standing
from mailfleet.delivery.local import judge_per_account, spam_fields, store_parts
from mailfleet.delivery.outbox import queue_outgoing
from mailfleet.errors import Invalid, RateLimited, TooLarge, Unavailable
from mailfleet.filters import FilterUnavailable, MailToCheck, Verdict
from mailfleet.filters.bayes import BayesFilter
from mailfleet.filters.pipeline import FilterPipeline, Outcome
from mailfleet.ids import new_id, now_ms, parse_id
from mailfleet.logs import get_logger, new_trace_id
from mailfleet.proto.addresses import Address, AddressError, mailbox_key, normalize_email
from mailfleet.proto.compose import (
    OutgoingAttachment,
    compose,
    html_to_text,
    new_message_id,
    sanitize_html,
    snippet,
)
from mailfleet.proto.hidden_chars import describe
from mailfleet.proto.mime import ParsedMessage, parse_message
from mailfleet.proto.mime.filenames import safe_filename
from mailfleet.proto.submission import AuthorError, HeaderError, prepare_submission
from mailfleet.ratelimit import RateLimiter
from mailfleet.storage.errors import BlobTooLarge
from mailfleet.storage.interfaces import (
    Account,
    Attachment,
    Blob,
    BlobStore,
    Delivery,
    DirectoryStore,
    MailboxStore,
    Message,
    NewMessage,
    Queue,
    Upload,
)

MAX_SUBJECT = 998  # one header line (RFC 5322 section 2.1.1)
# What a subject may not hold once its whitespace is one space each: controls
# (a NUL would reach the header as it is) and lone surrogates (no UTF-8).
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_NOT_IN_SUBJECTS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

hops = get_logger("mailfleet.send")


@dataclass(frozen=True, slots=True)
class Draft:
    to: list[Address]
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    subject: str = ""
    body: str | None = None
    html: str | None = None
    attachments: list[str] = field(default_factory=list)
    in_reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    id: int
    status: str


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A message ready for the steps every send shares: its blobs are stored,
    and these are the fields every copy of it carries."""

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]  # on the sender's copy only
    subject: str
    snippet: str
    body_text: str  # for the search index
    message_id_header: str
    in_reply_to: str | None
    references: tuple[str, ...]
    raw: Blob
    body_hash: str
    html_hash: str | None
    attachments: tuple[Attachment, ...]  # ids are given per copy
    received_at: int
    ingest_key: str  # what makes two calls the same message


class SendService:
    def __init__(
        self,
        directory: DirectoryStore,
        mailboxes: MailboxStore,
        blobs: BlobStore,
        queue: Queue,
        limiter: RateLimiter,
        limits: LimitSettings,
        hostname: str,
        filters: FilterPipeline,
        abuse: OutboundAbuse,
        bayes: BayesFilter | None = None,
    ) -> None:
        self.filters = filters
        self.abuse = abuse
        self.bayes = bayes
        self.directory = directory
        self.mailboxes = mailboxes
        self.blobs = blobs
        self.queue = queue
        self.limiter = limiter
        self.limits = limits
        self.hostname = hostname

    async def upload(
        self, account: Account, filename: str, content_type: str, chunks: AsyncIterator[bytes]
    ) -> Upload:
        try:
            blob = await self.blobs.put_stream(chunks, self.limits.max_attachment_bytes)
        except BlobTooLarge:
            raise TooLarge(
                f"attachment over the limit of {self.limits.max_attachment_bytes} bytes",
                code="attachment_too_large",
            ) from None
        upload = Upload(
            account_id=account.id,
            id=new_id(),
            filename=_clean_filename(filename),
            content_type=_clean_content_type(content_type),
            size=blob.size,
            blob_hash=blob.hash,
            created_at=now_ms(),
        )
        await self.mailboxes.create_upload(upload)
        return upload

    async def send(self, account: Account, draft: Draft) -> Sent:
        """``POST /v1/messages``: a message composed here from a draft."""
        standing = await self.abuse.check_may_send(account.id)
        recipients = _unique(draft.to + draft.cc + draft.bcc)
        self._check_recipient_count(recipients)
        subject = _one_line_subject(draft.subject)
        uploads = [await self._owned_upload(account, ref) for ref in draft.attachments]
        size = len((draft.body or "").encode()) + len((draft.html or "").encode())
        size += sum(u.size * 4 // 3 for u in uploads)  # base64 on the wire
        self._check_size(size)
        local, remote = await self._split_recipients(recipients)
        parent = await self._parent(account, draft.in_reply_to)
        await self._count_message(account, standing)

        now = datetime.now(UTC)
        message_id_header = new_message_id(self.hostname)
        in_reply_to = parent.message_id_header if parent else None
        references = [*parent.references, parent.message_id_header] if parent else []
        sender = Address(account.email, account.name)
        raw = compose(
            sender=sender,
            to=draft.to,
            cc=draft.cc,
            subject=subject,
            text=draft.body,
            html=draft.html,
            attachments=[
                OutgoingAttachment(u.filename, u.content_type, await self.blobs.get(u.blob_hash))
                for u in uploads
            ],
            message_id=message_id_header,
            date=now,
            in_reply_to=in_reply_to,
            references=references,
        )
        outcome = await self._check_content(account, standing, raw, None, local, remote)
        text = draft.body if draft.body is not None else html_to_text(draft.html or "")
        # Written together: the blob store commits concurrent writes at once
        # (one fsync for the three instead of one each).
        parts = [raw, text.encode()] + ([sanitize_html(draft.html).encode()] if draft.html else [])
        raw_blob, body_blob, *html_blob = await asyncio.gather(*map(self.blobs.put, parts))
        message = _Outgoing(
            sender=sender,
            to=tuple(draft.to),
            cc=tuple(draft.cc),
            bcc=tuple(draft.bcc),
            subject=subject,
            snippet=snippet(text),
            body_text=text,
            message_id_header=message_id_header,
            in_reply_to=in_reply_to,
            references=tuple(references),
            raw=raw_blob,
            body_hash=body_blob.hash,
            html_hash=html_blob[0].hash if html_blob else None,
            attachments=tuple(
                Attachment(0, u.filename, u.content_type, u.size, u.blob_hash) for u in uploads
            ),
            received_at=int(now.timestamp() * 1000),
            # A fresh Message-ID per call: nothing to repeat.
            ingest_key=message_id_header,
        )
        return await self._store_and_queue(account, message, local, remote, outcome, via="api")

    async def send_raw(
        self, account: Account, mail_from: str, recipients: Sequence[str], raw: bytes
    ) -> Sent:
        """SMTP submission: a message the user's client composed, with its
        envelope. The same path as ``send`` from the limits on: the sender
        may write only as themselves, Bcc is removed, Date and Message-ID are
        added when missing. A client repeating a transaction it saw no reply
        to (same message, same envelope) stores and queues nothing twice."""
        self.check_sender(account, mail_from)
        standing = await self.abuse.check_may_send(account.id)
        envelope = _unique([_envelope_address(r) for r in recipients])
        self._check_recipient_count(envelope)
        self._check_size(len(raw))
        local, remote = await self._split_recipients(envelope)
        author = Address(account.email, account.name)
        now = datetime.now(UTC)
        try:
            submission = prepare_submission(raw, author, self.hostname, now)
        except HeaderError as exc:
            raise Invalid(str(exc), code="malformed_header") from None
        except AuthorError as exc:
            raise Invalid(
                f"{account.email} may send only as itself ({exc})", code="sender_not_allowed"
            ) from None
        # Pure but CPU-bound on big mail: off the event loop.
        parsed = await asyncio.to_thread(parse_message, submission.raw)
        if parsed.sender is None or mailbox_key(parsed.sender.email) != account.email:
            # prepare_submission checked every From; this is the reader's view.
            raise Invalid(f"{account.email} may send only as itself", code="sender_not_allowed")
        outcome = await self._check_content(
            account, standing, submission.raw, parsed, local, remote
        )
        await self._count_message(account, standing)

        listed = {mailbox_key(a.email) for a in (*parsed.to, *parsed.cc)}
        named = {mailbox_key(a.email): a for a in submission.bcc}
        bcc = tuple(
            named.get(mailbox_key(a.email), a)
            for a in envelope
            if mailbox_key(a.email) not in listed
        )
        raw_blob = await self.blobs.put(submission.raw)
        parts = await store_parts(self.blobs, parsed)
        message_id_header = parsed.message_id or submission.message_id
        # The client chose the Message-ID and may reuse it for another message
        # or envelope; only the same bytes to the same recipients are the
        # same submission.
        same_submission = hashlib.sha256(
            "\n".join([raw_blob.hash, *sorted(mailbox_key(a.email) for a in envelope)]).encode()
        ).hexdigest()[:32]
        message = _Outgoing(
            sender=parsed.sender,
            to=parsed.to,
            cc=parsed.cc,
            bcc=bcc,
            subject=parsed.subject,
            snippet=snippet(parsed.text),
            body_text=parsed.text,
            message_id_header=message_id_header,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            raw=raw_blob,
            body_hash=parts.body_hash,
            html_hash=parts.html_hash,
            attachments=parts.attachments,
            received_at=int(now.timestamp() * 1000),
            ingest_key=f"{message_id_header}:{same_submission}",
        )
        return await self._store_and_queue(
            account, message, local, remote, outcome, via="submission"
        )

    async def _check_content(
        self,
        account: Account,
        standing: Standing,
        raw: bytes,
        parsed: ParsedMessage | None,
        local: dict[Address, int],
        remote: list[Address],
    ) -> Outcome:
        """The send filters before anything is stored. Content (virus
        scanner, attachment policy): Invalid (422, SMTP 554 5.7.1) with what
        was found, Unavailable (503, SMTP 451 4.7.1) when the scanner cannot
        answer now. Spam: counted against the account (delivery/abuse.py);
        a ``reject`` is refused (``spam_refused``), a ``spam`` goes out, in
        Junk for hosted recipients."""
        if not self.filters.filters:
            return self.filters.outcome([])
        if parsed is None:
            parsed = await asyncio.to_thread(parse_message, raw)
        mail = MailToCheck(
            raw=raw,
            parsed_message=parsed,
            mail_from=account.email,
            recipients=tuple(a.email for a in [*local, *remote]),
            direction="out" if remote else "local",
        )
        try:
            outcome = await self.filters.run(mail)
        except FilterUnavailable as exc:
            raise Unavailable(
                f"the message cannot be checked for viruses now; try again later ({exc})",
                code="scanner_unavailable",
            ) from None
        if not outcome.quarantined and outcome.verdict != Verdict.QUARANTINE:
            if outcome.verdict in (Verdict.SPAM, Verdict.REJECT):
                await self.abuse.spam_sent(standing, outcome.reasons)
            if outcome.verdict == Verdict.REJECT:
                said = ", ".join(r.name for r in outcome.reasons if r.score > 0) or "spam"
                raise Invalid(
                    f"the message reads as spam and was not sent ({said})", code="spam_refused"
                )
            return outcome
        viruses = [r.detail for r in outcome.reasons if r.name == "VIRUS"]
        if viruses:
            raise Invalid(
                f"the message carries a virus ({', '.join(viruses)}) and was not sent",
                code="virus_found",
            )
        blocked = [r.detail for r in outcome.reasons if r.name == "ATTACHMENT_BLOCKED"]
        if blocked:
            raise Invalid(
                f"attachments of this type cannot be sent ({'; '.join(blocked)})",
                code="attachment_blocked",
            )
        details = "; ".join(f"{r.name} {r.detail}".strip() for r in outcome.reasons)
        raise Invalid(
            f"the message could not be checked in full and was not sent ({details})",
            code="content_refused",
        )

    def check_sender(self, account: Account, mail_from: str) -> None:
        """Invalid unless ``mail_from`` is the account's own address:
        ``invalid_sender`` when it is no address, ``sender_not_allowed`` when
        it is someone else's."""
        try:
            address = mailbox_key(normalize_email(mail_from))
        except AddressError as exc:
            raise Invalid(f"sender: {exc}", code="invalid_sender") from None
        if address != account.email:
            raise Invalid(
                f"{account.email} may not send as {mail_from!r}", code="sender_not_allowed"
            )

    async def check_recipient(self, recipient: str) -> Address:
        """An envelope recipient as an Address: Invalid when it is not an
        address (``invalid_address``) or names a hosted mailbox that does not
        exist (``unknown_recipient``). Any other domain is fine: the sender
        is authenticated."""
        address = _envelope_address(recipient)
        await self._split_recipients([address])
        return address

    def _check_recipient_count(self, recipients: Sequence[Address]) -> None:
        if not recipients:
            raise Invalid("at least one recipient is needed", code="no_recipients")
        if len(recipients) > self.limits.max_recipients:
            raise Invalid(
                f"{len(recipients)} recipients; at most {self.limits.max_recipients}",
                code="too_many_recipients",
            )

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_message_bytes:
            raise TooLarge(
                f"message of about {size} bytes is over the limit of "
                f"{self.limits.max_message_bytes}",
                code="message_too_large",
            )

    async def _count_message(self, account: Account, standing: Standing) -> None:
        """One more message sent; RateLimited past the per-account limits
        (which counts towards a hold: delivery/abuse.py)."""
        try:
            await self.limiter.hit(
                f"send:m:{account.id}", self.limits.send_per_minute, 60, "messages sent"
            )
            await self.limiter.hit(
                f"send:d:{account.id}", self.limits.send_per_day, 86400, "messages sent"
            )
        except RateLimited:
            await self.abuse.rate_limited(standing)
            raise

    async def _store_and_queue(
        self,
        account: Account,
        message: _Outgoing,
        local: dict[Address, int],
        remote: list[Address],
        outcome: Outcome,
        *,
        via: str,
    ) -> Sent:
        """The last steps of every send: the Sent copy and the hosted
        recipients' Inbox copies in one store call, then one ``outgoing`` item
        per remote domain. Repeating a call with the same ingest key stores
        and queues nothing new (the copies and the queue items dedupe). The
        store places each copy in its account's thread by its In-Reply-To and
        References (threadkeys.py). When the send filters (``outcome``) or the
        recipient's own Bayes statistics judge it spam, a hosted recipient's
        copy goes to Junk with the verdict, score, reasons and X-Spam-* lines;
        otherwise every copy is the same mail, byte for byte.

        The send's correlation id (decision 0029) is minted here, once per
        call (a ``POST /v1/messages``, a submission transaction): its hops
        are this call's "sent" and local "stored" lines, then the queue's
        and worker-out's lines of its ``outgoing`` items."""

        def copy(
            account_id: int,
            folder_id: int,
            *,
            is_sender: bool,
            delivery: tuple[Delivery, ...] = (),
            judged: Outcome | None = None,
        ) -> NewMessage:
            message_id = new_id()
            return NewMessage(
                account_id=account_id,
                id=message_id,
                folder_id=folder_id,
                thread_id=message_id,
                received_at=message.received_at,
                ingest_key=f"{'sent' if is_sender else 'local'}:{message.ingest_key}",
                sender=message.sender,
                to=message.to,
                cc=message.cc,
                bcc=message.bcc if is_sender else (),
                subject=message.subject,
                snippet=message.snippet,
                message_id_header=message.message_id_header,
                in_reply_to=message.in_reply_to,
                references=message.references,
                raw_hash=message.raw.hash,
                raw_size=message.raw.size,
                body_hash=message.body_hash,
                html_hash=message.html_hash,
                is_read=is_sender,
                attachments=tuple(replace(a, id=new_id()) for a in message.attachments),
                delivery=delivery,
                body_text=message.body_text,
                **(spam_fields(judged) if judged is not None else {}),
            )

        sent_folder = await self.mailboxes.folder_by_role(account.id, "sent")
        delivery = tuple(
            [Delivery(a.email, "delivered") for a in local]
            + [Delivery(a.email, "queued") for a in remote]
        )
        sent_copy = copy(account.id, sent_folder.id, is_sender=True, delivery=delivery)
        inbox_copies = []
        recipients = list(dict.fromkeys(local.values()))
        judged = await judge_per_account(
            self.filters,
            self.bayes,
            outcome,
            recipients,
            subject=message.subject,
            sender=message.sender.email if message.sender else None,
            text=message.body_text,
        )
        for recipient_id, own in zip(recipients, judged, strict=True):
            spam = own.verdict != Verdict.HAM
            folder = await self.mailboxes.folder_by_role(recipient_id, "junk" if spam else "inbox")
            inbox_copies.append(
                copy(recipient_id, folder.id, is_sender=False, judged=own if spam else None)
            )
        stored_ids = await self.mailboxes.store_messages([sent_copy, *inbox_copies])
        # A repeated ingest key returns the Sent copy stored the first time:
        # its id keeps the queue's dedupe keys the same.
        sent_id = stored_ids[0]
        trace = new_trace_id()
        hops.info(
            "sent",
            trace_id=trace,
            via=via,
            account_id=account.id,
            mail_from=account.email,
            message_id=sent_id,
            message_id_header=message.message_id_header,
            local=len(local),
            remote=len(remote),
            size=message.raw.size,
        )
        for stored, inbox_copy in zip(stored_ids[1:], inbox_copies, strict=True):
            hops.info(
                "stored",
                trace_id=trace,
                account_id=inbox_copy.account_id,
                message_id=stored,
                folder="inbox" if inbox_copy.spam_verdict is None else "junk",
                folder_id=inbox_copy.folder_id,
            )

        await queue_outgoing(
            self.queue,
            account_id=account.id,
            message_id=sent_id,
            raw_hash=message.raw.hash,
            mail_from=account.email,
            recipients=[a.email for a in remote],
            trace=trace,
        )
        return Sent(sent_id, "queued")

    async def _owned_upload(self, account: Account, ref: str) -> Upload:
        upload_id = parse_id(ref)
        upload = await self.mailboxes.get_upload(account.id, upload_id) if upload_id else None
        if upload is None:
            raise Invalid(f"no uploaded attachment with id {ref!r}", code="unknown_attachment")
        return upload

    async def _split_recipients(
        self, recipients: list[Address]
    ) -> tuple[dict[Address, int], list[Address]]:
        """Hosted recipients (with their account ids) and the others. A hosted
        address with no account is refused now, before anything is stored."""
        local: dict[Address, int] = {}
        remote: list[Address] = []
        hosted: dict[str, bool] = {}
        for address in recipients:
            domain = address.email.rpartition("@")[2]
            if domain not in hosted:
                hosted[domain] = await self.directory.get_domain(domain) is not None
            if not hosted[domain]:
                remote.append(address)
                continue
            account = await self.directory.get_account_by_email(mailbox_key(address.email))
            if account is None or account.disabled:
                raise Invalid(f"no mailbox {address.email} here", code="unknown_recipient")
            local[address] = account.id
        return local, remote

    async def _parent(self, account: Account, ref: str | None) -> Message | None:
        if ref is None:
            return None
        message_id = parse_id(ref)
        message = await self.mailboxes.get_message(account.id, message_id) if message_id else None
        if message is None:
            raise Invalid(f"no message {ref!r} to reply to", code="unknown_message")
        return message


def _unique(addresses: list[Address]) -> list[Address]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        key = mailbox_key(address.email)
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


def _envelope_address(text: str) -> Address:
    try:
        return Address(normalize_email(text))
    except AddressError as exc:
        raise Invalid(str(exc), code="invalid_address") from None


def _one_line_subject(text: str) -> str:
    """The subject as sent: NFC, its whitespace (line breaks included) one
    space each; Invalid when it holds control characters or is too long."""
    subject = " ".join(unicodedata.normalize("NFC", text).split())
    bad = _NOT_IN_SUBJECTS.search(subject)
    if bad is not None:
        raise Invalid(
            f"subject: {describe(bad.group())} is not allowed in a subject",
            code="invalid_subject",
        )
    if len(subject) > MAX_SUBJECT:
        raise Invalid(f"subject over {MAX_SUBJECT} characters", code="subject_too_long")
    return subject


def _clean_filename(name: str) -> str:
    """An uploaded file's name as we keep and send it: the last path
    component, NFC, without hidden characters (``proto/hidden_chars.py``),
    never ``.`` or ``..``; it never names a file of ours (blobs are stored by
    content hash) and is encoded wherever it is written."""
    return safe_filename(unicodedata.normalize("NFC", name)) or "attachment"


def _clean_content_type(value: str) -> str:
    """``type/subtype`` of RFC 2045 tokens, lower-cased; anything else is
    ``application/octet-stream`` (it is written into headers as it is)."""
    value = value.split(";", 1)[0].strip().lower()
    if not _CONTENT_TYPE.fullmatch(value):
        return "application/octet-stream"
    return value
