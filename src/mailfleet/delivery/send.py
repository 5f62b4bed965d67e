"""The send flow (DESIGN.md, "Send"): rate limit, validate, compose, store the
sender's copy in Sent, deliver to hosted recipients directly, queue the rest on
``outgoing`` (one item per destination domain, attachments by reference).

Used by ``POST /v1/messages`` and, later, by SMTP submission.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailfleet.config import LimitSettings
from mailfleet.delivery.local import deliver_locally
from mailfleet.errors import Invalid, TooLarge
from mailfleet.ids import new_id, now_ms, parse_id
from mailfleet.proto.addresses import mailbox_key
from mailfleet.proto.compose import (
    OutgoingAttachment,
    compose,
    html_to_text,
    new_message_id,
    sanitize_html,
    snippet,
)
from mailfleet.ratelimit import RateLimiter
from mailfleet.storage.errors import BlobTooLarge
from mailfleet.storage.interfaces import (
    Account,
    Address,
    Attachment,
    BlobStore,
    Delivery,
    EventBus,
    Message,
    MetadataStore,
    NewMessage,
    Queue,
    Upload,
)

OUTGOING = "outgoing"
MAX_SUBJECT = 998  # one header line (RFC 5322 section 2.1.1)


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


class SendService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        queue: Queue,
        events: EventBus,
        limiter: RateLimiter,
        limits: LimitSettings,
        hostname: str,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.queue = queue
        self.events = events
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
        await self.store.create_upload(upload)
        return upload

    async def send(self, account: Account, draft: Draft) -> Sent:
        recipients = _unique(draft.to + draft.cc + draft.bcc)
        if not recipients:
            raise Invalid("at least one recipient is needed", code="no_recipients")
        if len(recipients) > self.limits.max_recipients:
            raise Invalid(
                f"{len(recipients)} recipients; at most {self.limits.max_recipients}",
                code="too_many_recipients",
            )
        subject = " ".join(draft.subject.split())
        if len(subject) > MAX_SUBJECT:
            raise Invalid(f"subject over {MAX_SUBJECT} characters", code="subject_too_long")
        uploads = [await self._owned_upload(account, ref) for ref in draft.attachments]
        size = len((draft.body or "").encode()) + len((draft.html or "").encode())
        size += sum(u.size * 4 // 3 for u in uploads)  # base64 on the wire
        if size > self.limits.max_message_bytes:
            raise TooLarge(
                f"message of about {size} bytes is over the limit of "
                f"{self.limits.max_message_bytes}",
                code="message_too_large",
            )
        local, remote = await self._split_recipients(recipients)
        parent = await self._parent(account, draft.in_reply_to)

        await self.limiter.hit(
            f"send:m:{account.id}", self.limits.send_per_minute, 60, "messages sent"
        )
        await self.limiter.hit(
            f"send:d:{account.id}", self.limits.send_per_day, 86400, "messages sent"
        )

        now = datetime.now(UTC)
        received_at = int(now.timestamp() * 1000)
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
        text = draft.body if draft.body is not None else html_to_text(draft.html or "")
        raw_blob = await self.blobs.put(raw)
        body_blob = await self.blobs.put(text.encode())
        html_blob = await self.blobs.put(sanitize_html(draft.html).encode()) if draft.html else None

        def copy(
            account_id: int,
            folder_id: int,
            thread_id: int | None,
            *,
            is_sender: bool,
            delivery: tuple[Delivery, ...] = (),
        ) -> NewMessage:
            message_id = new_id()
            return NewMessage(
                account_id=account_id,
                id=message_id,
                folder_id=folder_id,
                thread_id=thread_id or message_id,
                received_at=received_at,
                ingest_key=f"{'sent' if is_sender else 'local'}:{message_id_header}",
                sender=sender,
                to=tuple(draft.to),
                cc=tuple(draft.cc),
                bcc=tuple(draft.bcc) if is_sender else (),
                subject=subject,
                snippet=snippet(text),
                message_id_header=message_id_header,
                in_reply_to=in_reply_to,
                references=tuple(references),
                raw_hash=raw_blob.hash,
                raw_size=raw_blob.size,
                body_hash=body_blob.hash,
                html_hash=html_blob.hash if html_blob else None,
                is_read=is_sender,
                attachments=tuple(
                    Attachment(new_id(), u.filename, u.content_type, u.size, u.blob_hash)
                    for u in uploads
                ),
                delivery=delivery,
            )

        sent_folder = await self.store.folder_by_role(account.id, "sent")
        delivery = tuple(
            [Delivery(a.email, "delivered") for a in local]
            + [Delivery(a.email, "queued") for a in remote]
        )
        sent_copy = copy(
            account.id,
            sent_folder.id,
            parent.summary.thread_id if parent else None,
            is_sender=True,
            delivery=delivery,
        )
        inbox_copies = []
        for recipient_id in dict.fromkeys(local.values()):
            inbox = await self.store.folder_by_role(recipient_id, "inbox")
            thread = (
                await self.store.find_by_message_id_header(recipient_id, in_reply_to)
                if in_reply_to
                else None
            )
            inbox_copies.append(
                copy(recipient_id, inbox.id, thread.thread_id if thread else None, is_sender=False)
            )
        await deliver_locally(self.store, self.events, [sent_copy, *inbox_copies])

        by_domain: dict[str, list[str]] = {}
        for address in remote:
            by_domain.setdefault(address.email.rpartition("@")[2], []).append(address.email)
        for domain, emails in sorted(by_domain.items()):
            await self.queue.put(
                OUTGOING,
                {
                    "account_id": account.id,
                    "message_id": sent_copy.id,
                    "raw_hash": raw_blob.hash,
                    "mail_from": account.email,
                    "domain": domain,
                    "recipients": emails,
                },
                dedupe_key=f"{sent_copy.id}:{domain}",
            )
        return Sent(sent_copy.id, "queued")

    async def _owned_upload(self, account: Account, ref: str) -> Upload:
        upload_id = parse_id(ref)
        upload = await self.store.get_upload(account.id, upload_id) if upload_id else None
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
                hosted[domain] = await self.store.get_domain(domain) is not None
            if not hosted[domain]:
                remote.append(address)
                continue
            account = await self.store.get_account_by_email(mailbox_key(address.email))
            if account is None or account.disabled:
                raise Invalid(f"no mailbox {address.email} here", code="unknown_recipient")
            local[address] = account.id
        return local, remote

    async def _parent(self, account: Account, ref: str | None) -> Message | None:
        if ref is None:
            return None
        message_id = parse_id(ref)
        message = await self.store.get_message(account.id, message_id) if message_id else None
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


def _clean_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if ord(c) >= 32 and c != "\x7f").strip()
    return name[:255] or "attachment"


def _clean_content_type(value: str) -> str:
    value = value.split(";", 1)[0].strip().lower()
    maintype, slash, subtype = value.partition("/")
    if not slash or not maintype.isascii() or not subtype or " " in value:
        return "application/octet-stream"
    return value
