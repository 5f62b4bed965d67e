"""Delivery into hosted mailboxes: store the copies, then tell listeners.

Shared by the send flow (no SMTP hop for hosted recipients) and by worker-in.
Events go out only after the store has committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailfleet.storage.interfaces import Event, EventBus, MetadataStore, NewMessage


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
