"""Request and response shapes of API v1, named as in shared/API.md."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import Response
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
    # One formatter for the models and the dicts the hot routes build.
    return rfc3339_ms((moment - _UNIX_EPOCH) // timedelta(milliseconds=1))


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


class MessageAttachmentOut(AttachmentOut):
    """An attachment of a stored message. HTML mail shows images by
    ``cid:`` URLs (RFC 2392): ``content_id`` is what such a URL names,
    without the angle brackets, or null; ``inline`` says the sender meant
    the part to be shown in the body (a multipart/related resource, or
    Content-Disposition: inline) rather than offered as a file."""

    content_id: str | None
    inline: bool


class SpamReasonOut(BaseModel):
    name: str
    score: float
    detail: str


class SpamOut(BaseModel):
    verdict: str | None
    score: float | None
    reasons: list[SpamReasonOut] = []


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
    attachments: list[MessageAttachmentOut]
    message_id_header: str
    in_reply_to: str | None
    references: list[str]
    spam: SpamOut
    delivery: list[DeliveryOut] | None = None
    body_unavailable: bool = Field(
        False,
        description="the stored body could not be read (lost or damaged): body and html are"
        " empty, the other fields come from the message's metadata",
    )


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


# -- responses ---------------------------------------------------------------------
# The models above document the responses (OpenAPI); the hot routes build the
# same shapes as plain dicts and send them through orjson (``JsonResponse``),
# which skips FastAPI's second validation pass and its encoder: a page of 50
# summaries costs a tenth. tests/api/test_schemas.py holds them to the models.


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_TWO_DIGITS = [f"{n:02d}" for n in range(100)]
_THREE_DIGITS = [f"{n:03d}" for n in range(1000)]


@lru_cache(maxsize=65536)
def _day(days_since_epoch: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=days_since_epoch)).isoformat()


def rfc3339_ms(ms: int) -> str:
    """Milliseconds since the epoch as ``2026-11-30T15:04:05.123Z`` (always
    milliseconds and "Z": one shape, which also sorts as text): fifty of
    these a page, so by table look-ups rather than ``strftime`` (a third)."""
    day, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    two = _TWO_DIGITS
    return f"{_day(day)}T{two[hours]}:{two[minutes]}:{two[seconds]}.{_THREE_DIGITS[millis]}Z"


def address_json(a: Address) -> dict[str, str]:
    return {"name": a.name, "email": a.email}


def folder_json(f: Folder) -> dict[str, Any]:
    return {
        "id": str(f.id),
        "name": f.name,
        "role": f.role,
        "user_id": str(f.account_id),
        "total": f.total,
        "unread": f.unread,
    }


def summary_json(s: MessageSummary) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "thread_id": str(s.thread_id),
        "folder_id": str(s.folder_id),
        "from": {"name": s.sender.name, "email": s.sender.email} if s.sender else None,
        "to": [{"name": a.name, "email": a.email} for a in s.to],
        "subject": s.subject,
        "snippet": s.snippet,
        "is_read": s.is_read,
        "is_flagged": s.is_flagged,
        "has_attachments": s.has_attachments,
        "received_at": rfc3339_ms(s.received_at),
    }


def page_json(items: list[MessageSummary], next_cursor: str | None) -> dict[str, Any]:
    return {"items": [summary_json(s) for s in items], "next_cursor": next_cursor}


def thread_row_json(t: ThreadSummary) -> dict[str, Any]:
    return {**summary_json(t.latest), "thread_count": t.count}


def attachment_json(a: Attachment | Upload) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "filename": a.filename,
        "content_type": a.content_type,
        "size": a.size,
    }


def message_attachment_json(a: Attachment) -> dict[str, Any]:
    return {**attachment_json(a), "content_id": a.content_id, "inline": a.inline}


def delivery_json(d: Delivery) -> dict[str, Any]:
    # When a deferred recipient is tried next; null otherwise.
    next_attempt = d.next_attempt_at if d.status == "deferred" else None
    return {
        "email": d.email,
        "status": d.status,
        "detail": d.detail,
        "next_attempt_at": rfc3339_ms(next_attempt) if next_attempt is not None else None,
    }


def message_json(view: MessageView) -> dict[str, Any]:
    m = view.message
    return {
        **summary_json(m.summary),
        "user_id": str(m.summary.account_id),
        "cc": [address_json(a) for a in m.cc],
        "bcc": [address_json(a) for a in m.bcc],
        "body": view.body,
        "html": view.html,
        "attachments": [message_attachment_json(a) for a in m.attachments],
        "message_id_header": m.message_id_header,
        "in_reply_to": m.in_reply_to,
        "references": list(m.references),
        "spam": {
            "verdict": m.spam_verdict,
            "score": m.spam_score,
            "reasons": [
                {"name": r.name, "score": r.score, "detail": r.detail} for r in m.spam_reasons
            ],
        },
        "delivery": [delivery_json(d) for d in m.delivery] if m.delivery else None,
        "body_unavailable": view.body_unavailable,
    }
