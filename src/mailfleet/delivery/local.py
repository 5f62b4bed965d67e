"""A parsed mail's parts into the blob store, before its copies are stored in
hosted mailboxes (``MailboxStore.store_messages``, which also wakes the
accounts' listeners after its commit), and each copy's filter verdict. Shared
by the send flow (no SMTP hop for hosted recipients) and by worker-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.filters import Reason
from mailfleet.filters.bayes import BayesFilter, mail_tokens
from mailfleet.filters.pipeline import FilterPipeline, Outcome
from mailfleet.ids import new_id
from mailfleet.proto.compose import snippet
from mailfleet.proto.mime import ParsedMessage
from mailfleet.storage.interfaces import Attachment, BlobStore, NewMessage, SpamReason


@dataclass(frozen=True, slots=True)
class StoredParts:
    """A parsed mail's parts in the blob store, shared by all its copies."""

    attachments: tuple[Attachment, ...]
    body_hash: str
    html_hash: str | None


async def store_parts(blobs: BlobStore, parsed: ParsedMessage) -> StoredParts:
    """Attachments, the text and the sanitized HTML, content-addressed: a
    part already stored (another copy, another mail) is stored once."""
    attachments = tuple(
        [
            Attachment(
                new_id(),
                a.filename,
                a.content_type,
                len(a.data),
                (await blobs.put(a.data)).hash,
                a.content_id,
                a.inline,
            )
            for a in parsed.attachments
        ]
    )
    body_hash = (await blobs.put(parsed.text.encode())).hash
    html_hash = (await blobs.put(parsed.html.encode())).hash if parsed.html else None
    return StoredParts(attachments, body_hash, html_hash)


def received_copy(
    parsed: ParsedMessage,
    parts: StoredParts,
    *,
    account_id: int,
    folder_id: int,
    received_at: int,
    ingest_key: str,
    raw_hash: str,
    raw_size: int,
    message_id_header: str,
    **fields: Any,
) -> NewMessage:
    """One account's copy of a mail that came in whole (delivered or
    imported): what the parsed mail and its stored parts say, with a new id;
    ``message_id_header`` stands when the mail has none; ``fields``: spam
    fields, flags. store_messages places it in its thread (threadkeys.py) in
    the transaction that stores it, so no lookups here."""
    message_id = new_id()
    return NewMessage(
        account_id=account_id,
        id=message_id,
        folder_id=folder_id,
        thread_id=message_id,
        received_at=received_at,
        ingest_key=ingest_key,
        sender=parsed.sender,
        to=parsed.to,
        cc=parsed.cc,
        bcc=(),
        subject=parsed.subject,
        snippet=snippet(parsed.text),
        body_text=parsed.text,
        message_id_header=parsed.message_id or message_id_header,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        raw_hash=raw_hash,
        raw_size=raw_size,
        body_hash=parts.body_hash,
        html_hash=parts.html_hash,
        attachments=parts.attachments,
        **fields,
    )


def spam_reasons(reasons: Sequence[Reason]) -> tuple[SpamReason, ...]:
    """The filters' reasons as the stores keep them."""
    return tuple(SpamReason(r.name, r.score, r.detail) for r in reasons)


def spam_fields(outcome: Outcome) -> dict[str, Any]:
    """A hosted copy's record of what the filters found (``NewMessage``'s
    spam fields): verdict, score, reasons, and the header lines stored with it."""
    return {
        "spam_verdict": outcome.verdict.value,
        "spam_score": outcome.score,
        "spam_reasons": spam_reasons(outcome.reasons),
        "filter_headers": outcome.header_block(),
    }


async def judge_per_account(
    filters: FilterPipeline,
    bayes: BayesFilter | None,
    outcome: Outcome,
    account_ids: Sequence[int],
    *,
    subject: str,
    sender: str | None,
    text: str,
    html: str | None = None,
) -> list[Outcome]:
    """Each recipient account's outcome: the mail-wide filters' one, with that
    account's own Bayes result added (the same mail is spam to one user and
    ham to another). The accounts' statistics are read side by side (on
    PostgreSQL, on each account's shard)."""
    if bayes is None or not account_ids:
        return [outcome] * len(account_ids)
    tokens = mail_tokens(subject, sender, text, html)
    results = await asyncio.gather(*(bayes.check(a, tokens) for a in account_ids))
    return [filters.extended(outcome, r) if r is not None else outcome for r in results]
