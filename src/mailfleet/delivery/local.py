"""A parsed mail's parts into the blob store, before its copies are stored in
hosted mailboxes (``MailboxStore.store_messages``, which also wakes the
accounts' listeners after its commit). Shared by the send flow (no SMTP hop
for hosted recipients) and by worker-in.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailfleet.ids import new_id
from mailfleet.proto.mime import ParsedMessage
from mailfleet.storage.interfaces import Attachment, BlobStore


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
