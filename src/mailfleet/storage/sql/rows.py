"""Rows of the SQL mailbox tables to records and back; shared by every SQL
engine's reads and writes (SQLite now, PostgreSQL later)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from mailfleet.proto.addresses import Address
from mailfleet.storage.interfaces import (
    Account,
    Attachment,
    Delivery,
    Folder,
    MessageSummary,
    NewMessage,
    SpamReason,
)
from mailfleet.storage.sql.schema import messages

# Recipients a delivery attempt may take (``MailboxStore.claim_deliveries``).
CLAIMABLE = ("queued", "deferred")

SUMMARY_COLUMNS = (
    messages.c.account_id,
    messages.c.id,
    messages.c.folder_id,
    messages.c.thread_id,
    messages.c.received_at,
    messages.c.sender,
    messages.c.to_addrs,
    messages.c.subject,
    messages.c.snippet,
    messages.c.is_read,
    messages.c.is_flagged,
    messages.c.has_attachments,
)


def addresses_to_json(addresses: Sequence[Address]) -> str:
    return json.dumps([[a.email, a.name] for a in addresses], ensure_ascii=False)


def addresses_from_json(text: str) -> tuple[Address, ...]:
    return tuple(Address(email, name) for email, name in orjson.loads(text))


def summary_from_row(row: Any) -> MessageSummary:
    """``row`` starts with ``SUMMARY_COLUMNS``, read by position, and the
    summary is built by position: a listing decodes 50 of these per page."""
    sender = orjson.loads(row[5]) if row[5] else None
    return MessageSummary(
        row[0],  # account_id
        row[1],  # id
        row[2],  # folder_id
        row[3],  # thread_id
        row[4],  # received_at
        Address(sender[0], sender[1]) if sender else None,
        tuple([Address(email, name) for email, name in orjson.loads(row[6])]),  # to
        row[7],  # subject
        row[8],  # snippet
        bool(row[9]),  # is_read
        bool(row[10]),  # is_flagged
        bool(row[11]),  # has_attachments
    )


def folder_from_row(row: Any) -> Folder:
    return Folder(
        row["account_id"], row["id"], row["name"], row["role"], row["total"], row["unread"]
    )


def account_from_row(row: Any) -> Account:
    return Account(
        row["id"],
        row["email"],
        row["name"],
        row["password_hash"],
        bool(row["disabled"]),
        row["created_at"],
        row["held_reason"],
        row["held_at"],
        row["released_at"],
    )


def attachment_rows(fresh: Sequence[NewMessage]) -> list[dict[str, Any]]:
    return [
        dict(
            account_id=m.account_id,
            message_id=m.id,
            id=a.id,
            position=i,
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            blob_hash=a.blob_hash,
            content_id=a.content_id,
            inline=a.inline,
        )
        for m in fresh
        for i, a in enumerate(m.attachments)
    ]


def delivery_rows(fresh: Sequence[NewMessage]) -> list[dict[str, Any]]:
    return [
        dict(
            account_id=m.account_id,
            message_id=m.id,
            email=d.email,
            status=d.status,
            detail=d.detail,
            next_attempt_at=d.next_attempt_at,
            claimed_until=None,
            claimed_by=None,
        )
        for m in fresh
        for d in m.delivery
    ]


def folder_counts(fresh: Sequence[NewMessage]) -> dict[tuple[int, int], tuple[int, int]]:
    """(account_id, folder_id) → (messages, unread ones) the batch adds."""
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    for m in fresh:
        total, unread = counts.get((m.account_id, m.folder_id), (0, 0))
        counts[(m.account_id, m.folder_id)] = (total + 1, unread + (0 if m.is_read else 1))
    return counts


def message_row(m: NewMessage) -> dict[str, Any]:
    return dict(
        account_id=m.account_id,
        id=m.id,
        folder_id=m.folder_id,
        thread_id=m.thread_id,
        received_at=m.received_at,
        ingest_key=m.ingest_key,
        sender=json.dumps([m.sender.email, m.sender.name], ensure_ascii=False)
        if m.sender
        else None,
        to_addrs=addresses_to_json(m.to),
        cc_addrs=addresses_to_json(m.cc),
        bcc_addrs=addresses_to_json(m.bcc),
        subject=m.subject,
        snippet=m.snippet,
        message_id_header=m.message_id_header,
        in_reply_to=m.in_reply_to,
        references=json.dumps(list(m.references)),
        raw_hash=m.raw_hash,
        raw_size=m.raw_size,
        body_hash=m.body_hash,
        html_hash=m.html_hash,
        is_read=m.is_read,
        is_flagged=m.is_flagged,
        # What the user sees as attachments: images shown inside the HTML
        # (cid:) are not (a signature's logo puts no paperclip on a mail).
        has_attachments=any(not a.inline for a in m.attachments),
        spam_verdict=m.spam_verdict,
        spam_score=m.spam_score,
        spam_reasons=reasons_to_json(m.spam_reasons) if m.spam_reasons else None,
        filter_headers=m.filter_headers or None,
        bayes_trained=None,  # taught later, by moves (decision 0022)
    )


def attachment_from_row(a: Any) -> Attachment:
    return Attachment(
        a["id"],
        a["filename"],
        a["content_type"],
        a["size"],
        a["blob_hash"],
        a["content_id"],
        bool(a["inline"]),
    )


def delivery_from_row(d: Any) -> Delivery:
    return Delivery(d["email"], d["status"], d["detail"], d["next_attempt_at"])


def reasons_to_json(reasons: Sequence[SpamReason]) -> str:
    """The filters' reasons in a text column: ``[[name, score, detail], ...]``."""
    return json.dumps([[r.name, r.score, r.detail] for r in reasons], ensure_ascii=False)


def reasons_from_json(text: str | None) -> tuple[SpamReason, ...]:
    return tuple(
        SpamReason(str(name), float(score), str(detail))
        for name, score, detail in orjson.loads(text or "[]")
    )
