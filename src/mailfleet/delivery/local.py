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
from mailfleet.proto.mime import ParsedMessage
from mailfleet.storage.interfaces import Attachment, BlobStore, SpamReason


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
