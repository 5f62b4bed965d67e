"""Delivery into hosted mailboxes: store the copies, then tell listeners.

Shared by the send flow (no SMTP hop for hosted recipients) and by worker-in.
Events go out only after the store has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailfleet.ids import new_id
from mailfleet.proto.mime import ParsedMessage
from mailfleet.storage.interfaces import (
    Attachment,
    BlobStore,
    Event,
    EventBus,
    MetadataStore,
    NewMessage,
)


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


async def deliver_locally(
    store: MetadataStore, events: EventBus, copies: Sequence[NewMessage]
) -> list[int]:
    ids = await store.store_messages(copies)
    for copy, stored_id in zip(copies, ids, strict=True):
        if stored_id == copy.id:  # a repeated ingest_key stored nothing new
            await events.publish(
                Event(
                    copy.account_id,
                    "message.new",
                    {"id": str(copy.id), "folder_id": str(copy.folder_id)},
                )
            )
    return ids
