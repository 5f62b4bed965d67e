"""Request and response shapes of API v1, named as in shared/API.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from mailfleet.mailbox.service import MessageView
from mailfleet.proto.addresses import Address
from mailfleet.storage.interfaces import (
    Attachment,
    Delivery,
    Folder,
    MessageSummary,
    ThreadSummary,
    Upload,
)


def _rfc3339(moment: datetime) -> str:
    # Always milliseconds and "Z": one shape, which also sorts as text.
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignUp(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    name: str = Field("", max_length=200)


class LogIn(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class FolderCreate(Strict):
    name: str


class MessagePatchIn(Strict):
    is_read: bool | None = None
    is_flagged: bool | None = None
    folder_id: str | None = None


AddressIn = str | dict[str, Any]


class SendIn(Strict):
    to: list[AddressIn] = Field(default_factory=list)
    cc: list[AddressIn] = Field(default_factory=list)
    bcc: list[AddressIn] = Field(default_factory=list)
    subject: str = Field(max_length=10_000)
    body: str | None = None
    html: str | None = None
    attachments: list[str] = Field(default_factory=list)
    in_reply_to: str | None = None


class AddressOut(BaseModel):
    name: str
    email: str


class AccountOut(BaseModel):
    id: str
    email: str
    name: str


class TokenOut(BaseModel):
    token: str
    expires_at: Timestamp


class FolderOut(BaseModel):
    id: str
    name: str
    role: str | None
    user_id: str
    total: int
    unread: int


class SummaryOut(BaseModel):
    id: str
    thread_id: str
    folder_id: str
    from_: AddressOut | None = Field(alias="from", serialization_alias="from")
    to: list[AddressOut]
    subject: str
    snippet: str
    is_read: bool
    is_flagged: bool
    has_attachments: bool
    received_at: Timestamp

    model_config = ConfigDict(populate_by_name=True)


class AttachmentOut(BaseModel):
    id: str
    filename: str
    content_type: str
    size: int


class SpamOut(BaseModel):
    verdict: str | None
    score: float | None


class DeliveryOut(BaseModel):
    email: str
    status: str
    detail: str
    # When a deferred recipient is tried next; null otherwise.
    next_attempt_at: Timestamp | None = None


class MessageOut(SummaryOut):
    user_id: str
    cc: list[AddressOut]
    bcc: list[AddressOut]
    body: str
    html: str | None
    attachments: list[AttachmentOut]
    message_id_header: str
    in_reply_to: str | None
    references: list[str]
    spam: SpamOut
    delivery: list[DeliveryOut] | None = None


class PageOut(BaseModel):
    items: list[SummaryOut]
    next_cursor: str | None


class ThreadRowOut(SummaryOut):
    """A row of ``?group=thread``: the thread's newest message in the folder,
    and how many messages the thread holds (all folders)."""

    thread_count: int


class ThreadPageOut(BaseModel):
    items: list[ThreadRowOut]
    next_cursor: str | None


class ThreadOut(BaseModel):
    id: str
    subject: str
    messages: list[SummaryOut]


class SentOut(BaseModel):
    id: str
    status: str


class ContactOut(BaseModel):
    name: str
    email: str
    count: int


class LimitsOut(BaseModel):
    max_message_bytes: int
    max_attachment_bytes: int
    max_recipients: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def address_out(a: Address) -> AddressOut:
    return AddressOut(name=a.name, email=a.email)


def folder_out(f: Folder) -> FolderOut:
    return FolderOut(
        id=str(f.id),
        name=f.name,
        role=f.role,
        user_id=str(f.account_id),
        total=f.total,
        unread=f.unread,
    )


def _summary_fields(s: MessageSummary) -> dict[str, Any]:
    return dict(
        id=str(s.id),
        thread_id=str(s.thread_id),
        folder_id=str(s.folder_id),
        from_=address_out(s.sender) if s.sender else None,
        to=[address_out(a) for a in s.to],
        subject=s.subject,
        snippet=s.snippet,
        is_read=s.is_read,
        is_flagged=s.is_flagged,
        has_attachments=s.has_attachments,
        received_at=ms_to_datetime(s.received_at),
    )


def summary_out(s: MessageSummary) -> SummaryOut:
    return SummaryOut(**_summary_fields(s))


def thread_row_out(t: ThreadSummary) -> ThreadRowOut:
    return ThreadRowOut(**_summary_fields(t.latest), thread_count=t.count)


def attachment_out(a: Attachment | Upload) -> AttachmentOut:
    return AttachmentOut(
        id=str(a.id), filename=a.filename, content_type=a.content_type, size=a.size
    )


def message_out(view: MessageView) -> MessageOut:
    m = view.message
    return MessageOut(
        **_summary_fields(m.summary),
        user_id=str(m.summary.account_id),
        cc=[address_out(a) for a in m.cc],
        bcc=[address_out(a) for a in m.bcc],
        body=view.body,
        html=view.html,
        attachments=[attachment_out(a) for a in m.attachments],
        message_id_header=m.message_id_header,
        in_reply_to=m.in_reply_to,
        references=list(m.references),
        spam=SpamOut(verdict=m.spam_verdict, score=m.spam_score),
        delivery=[delivery_out(d) for d in m.delivery] if m.delivery else None,
    )


def delivery_out(d: Delivery) -> DeliveryOut:
    next_attempt = None
    if d.status == "deferred" and d.next_attempt_at is not None:
        next_attempt = ms_to_datetime(d.next_attempt_at)
    return DeliveryOut(
        email=d.email, status=d.status, detail=d.detail, next_attempt_at=next_attempt
    )
