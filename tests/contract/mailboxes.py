"""Builders shared by the mailbox, search and change-log suites."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from mailfleet.ids import new_id
from mailfleet.proto.addresses import Address
from mailfleet.storage.interfaces import (
    FOLDER_ROLES,
    Delivery,
    Folder,
    MailboxStore,
    NewMessage,
)

_serial = itertools.count(1)


@dataclass
class Box:
    """One account's mailbox: its id and folders by role (or name)."""

    account_id: int
    folders: dict[str, Folder]

    def folder(self, name: str) -> int:
        return self.folders[name].id


async def new_box(store: MailboxStore, *extra: str) -> Box:
    account_id = new_id()
    folders = [Folder(account_id, new_id(), r.capitalize(), r, 0, 0) for r in FOLDER_ROLES]
    folders += [Folder(account_id, new_id(), name, None, 0, 0) for name in extra]
    await store.create_mailbox(account_id, folders)
    return Box(account_id, {f.role or f.name: f for f in folders})


def mail(
    box: Box,
    folder: str = "inbox",
    *,
    at: int | None = None,
    is_read: bool = False,
    subject: str = "Hello",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    ingest_key: str | None = None,
    delivery: tuple[Delivery, ...] = (),
) -> NewMessage:
    n = next(_serial)
    mid = new_id()
    return NewMessage(
        account_id=box.account_id,
        id=mid,
        folder_id=box.folder(folder),
        thread_id=mid,
        received_at=1_767_225_600_000 + n * 1000 if at is None else at,
        ingest_key=ingest_key or f"t:{mid}",
        sender=Address("alice@example.com", "Alice"),
        to=(Address("bob@example.org", "Bob"),),
        cc=(),
        bcc=(),
        subject=subject,
        snippet="snippet",
        message_id_header=message_id or f"<m{n}.{mid}@test>",
        in_reply_to=in_reply_to,
        references=references,
        raw_hash="0" * 64,
        raw_size=100,
        body_hash=None,
        html_hash=None,
        is_read=is_read,
        delivery=delivery,
        body_text="body text",
    )


async def counted(store: MailboxStore, box: Box) -> dict[int, tuple[int, int]]:
    """Each folder's (total, unread) counted from its rows."""
    out: dict[int, tuple[int, int]] = {}
    for folder in await store.list_folders(box.account_id):
        rows = await store.list_messages(
            box.account_id, folder.id, is_read=None, limit=100_000, after=None
        )
        out[folder.id] = (len(rows), sum(1 for r in rows if not r.is_read))
    return out


async def counters(store: MailboxStore, box: Box) -> dict[int, tuple[int, int]]:
    return {f.id: (f.total, f.unread) for f in await store.list_folders(box.account_id)}
