"""Folder and message operations behind the API (and later IMAP).

Another account's folder or message is simply not found: every store call is
keyed by the caller's account, so there is nothing else to check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mailfleet.errors import BadInput, Conflict, ContentUnavailable, Invalid, NotFound
from mailfleet.filters.bayes import HAM, SPAM, BayesFilter, mail_tokens
from mailfleet.ids import new_id, parse_id
from mailfleet.proto.addresses import Address
from mailfleet.storage.errors import BlobCorrupt, BlobMissing, DuplicateKey
from mailfleet.storage.interfaces import (
    Attachment,
    BlobStore,
    Folder,
    ListCursor,
    MailboxStore,
    Message,
    MessagePatch,
    MessageSummary,
    ThreadSummary,
    Training,
)

T = TypeVar("T")
log = logging.getLogger("mailfleet.mailbox")

# A blob that is gone or no longer what its name says (BlobMissing,
# BlobCorrupt): lost for good, unlike a backend that is down (503, try later).
LOST_BLOB = (BlobMissing, BlobCorrupt)

MAX_FOLDER_NAME = 200
# GET /v1/threads/{id} answers the oldest this many; longer threads are rare
# (mailing lists) and the reader pages through the folder listing instead.
MAX_THREAD_MESSAGES = 1000
# Address completion reads this many of the newest messages of Sent (whom the
# account wrote to) and of Inbox and Archive (who wrote to it): two or three
# index range scans, no blob reads, whatever the mailbox size.
CONTACT_SCAN = 500
# Read Inbox mail learnt as ham, at most, by a move to Junk while the account
# has too little ham: one listing and this many message and blob reads, and
# only until the account has learnt enough.
KEPT_MAIL_SCAN = 30


def encode_cursor(summary: MessageSummary) -> str:
    raw = f"{summary.received_at}.{summary.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListCursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        received_at, _, message_id = raw.partition(".")
        return ListCursor(int(received_at), int(message_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("cursor is not one this server gave out", code="invalid_cursor") from None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[MessageSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ThreadPage:
    items: list[ThreadSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Thread:
    id: int
    subject: str  # the first message's
    messages: list[MessageSummary]  # oldest first


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone the account has corresponded with: how often and how lately."""

    address: Address
    count: int
    last_at: int


@dataclass(frozen=True, slots=True)
class MessageView:
    message: Message
    body: str
    html: str | None
    # The text or HTML body could not be read (its blob lost): the view has
    # what the metadata holds, and says so.
    body_unavailable: bool = False


class MailboxService:
    def __init__(
        self, store: MailboxStore, blobs: BlobStore, bayes: BayesFilter | None = None
    ) -> None:
        self.store = store
        self.blobs = blobs
        # Taught by moves into and out of Junk (decision 0022).
        self.bayes = bayes

    # -- folders ------------------------------------------------------------------

    async def change_head(self, account_id: int) -> int:
        """Where the account's change log stands: what was read at this head
        is still true while it stays."""
        return await self.store.head(account_id)

    async def folders(self, account_id: int) -> list[Folder]:
        return await self.store.list_folders(account_id)

    async def folder(self, account_id: int, folder_id: str | int) -> Folder:
        fid = parse_id(folder_id) if isinstance(folder_id, str) else folder_id
        folder = await self.store.get_folder(account_id, fid) if fid else None
        if folder is None:
            raise NotFound("no such folder", code="folder_not_found")
        return folder

    def _valid_name(self, name: str) -> str:
        name = name.strip()
        if not name or len(name) > MAX_FOLDER_NAME or any(ord(c) < 32 for c in name):
            raise Invalid(
                f"folder name must be 1 to {MAX_FOLDER_NAME} printable characters",
                code="invalid_folder_name",
            )
        return name

    async def _check_free(self, account_id: int, name: str, except_id: int | None = None) -> None:
        for folder in await self.store.list_folders(account_id):
            if folder.id != except_id and folder.name.casefold() == name.casefold():
                raise Conflict(f"a folder named {folder.name!r} exists", code="folder_exists")

    async def create_folder(self, account_id: int, name: str) -> Folder:
        name = self._valid_name(name)
        await self._check_free(account_id, name)
        folder = Folder(account_id, new_id(), name, None, 0, 0)
        try:
            await self.store.create_folder(folder)
        except DuplicateKey:
            raise Conflict(f"a folder named {name!r} exists", code="folder_exists") from None
        return folder

    async def rename_folder(self, account_id: int, folder_id: str, name: str) -> Folder:
        folder = await self.folder(account_id, folder_id)
        if folder.role is not None:
            raise Invalid("system folders cannot be renamed", code="system_folder")
        name = self._valid_name(name)
        await self._check_free(account_id, name, except_id=folder.id)
        try:
            await self.store.rename_folder(account_id, folder.id, name)
        except DuplicateKey:
            raise Conflict(f"a folder named {name!r} exists", code="folder_exists") from None
        return await self.folder(account_id, folder.id)

    async def delete_folder(self, account_id: int, folder_id: str) -> None:
        folder = await self.folder(account_id, folder_id)
        if folder.role is not None:
            raise Invalid("system folders cannot be deleted", code="system_folder")
        trash = await self.store.folder_by_role(account_id, "trash")
        await self.store.delete_folder(account_id, folder.id, trash.id)

    # -- messages -----------------------------------------------------------------

    async def list_messages(
        self,
        account_id: int,
        folder_id: str,
        *,
        is_read: bool | None,
        limit: int,
        cursor: str | None,
    ) -> Page:
        # One row more than asked tells whether another page exists.
        rows = await self._page(
            self.store.list_messages, account_id, folder_id, is_read, limit + 1, cursor
        )
        items = rows[:limit]
        return Page(items, encode_cursor(items[-1]) if len(rows) > limit else None)

    async def _page(
        self,
        read: Callable[..., Awaitable[list[T]]],
        account_id: int,
        folder_id: str,
        is_read: bool | None,
        limit: int,
        cursor: str | None,
    ) -> list[T]:
        """A listing's rows from the store, or NotFound for a folder that is
        not the account's."""
        after = decode_cursor(cursor) if cursor else None
        fid = parse_id(folder_id)
        rows = await read(account_id, fid, is_read=is_read, limit=limit, after=after) if fid else []
        if not rows:  # rows are keyed by account and folder: found rows prove the folder
            await self.folder(account_id, folder_id)
        return rows

    # -- threads (assigned on arrival: threadkeys.py) -------------------------

    async def list_threads(
        self,
        account_id: int,
        folder_id: str,
        *,
        is_read: bool | None,
        limit: int,
        cursor: str | None,
    ) -> ThreadPage:
        """``?group=thread``: one row per thread with mail in the folder, by
        its newest message there; the cursor is that message's position."""
        rows = await self._page(
            self.store.list_threads, account_id, folder_id, is_read, limit + 1, cursor
        )
        items = rows[:limit]
        return ThreadPage(items, encode_cursor(items[-1].latest) if len(rows) > limit else None)

    async def thread(self, account_id: int, thread_id: str) -> Thread:
        tid = parse_id(thread_id)
        found = (
            await self.store.thread_messages(account_id, tid, limit=MAX_THREAD_MESSAGES)
            if tid
            else []
        )
        if not found:
            raise NotFound("no such thread", code="thread_not_found")
        return Thread(tid or 0, found[0].subject, found)

    async def message(self, account_id: int, message_id: str | int) -> Message:
        mid = parse_id(message_id) if isinstance(message_id, str) else message_id
        message = await self.store.get_message(account_id, mid) if mid else None
        if message is None:
            raise NotFound("no such message", code="message_not_found")
        return message

    async def view(self, account_id: int, message_id: str) -> MessageView:
        message = await self.message(account_id, message_id)
        try:
            body = await self._blob_text(message.body_hash)
            html = await self._blob_text(message.html_hash) if message.html_hash else None
        except LOST_BLOB as exc:
            log.error(
                "message %s of account %s: body unreadable, shown without it: %r",
                message.summary.id,
                account_id,
                exc,
            )
            return MessageView(message, "", None, body_unavailable=True)
        return MessageView(message, body, html)

    async def raw(
        self, account_id: int, message_id: str
    ) -> tuple[Message, int, AsyncIterator[bytes]]:
        """The message, the source's size and the source: the filters'
        header lines (Authentication-Results, X-Spam-*), then the mail as
        received. A lost source raises ``ContentUnavailable`` here, before
        anything is sent."""
        message = await self.message(account_id, message_id)
        added = message.filter_headers.encode("utf-8")
        chunks = await self._opened(message, message.raw_hash, "source")
        return message, len(added) + message.raw_size, self._source(added, chunks)

    async def _source(self, added: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if added:
            # After the Return-Path line, which final delivery puts first
            # (RFC 5321 section 4.4), as a delivering MTA's filters do.
            first = await anext(chunks, b"")
            end = first.find(b"\r\n") if first.startswith(b"Return-Path:") else -1
            cut = end + 2 if end >= 0 else 0
            yield first[:cut] + added + first[cut:]
        async for chunk in chunks:
            yield chunk

    async def attachment(
        self, account_id: int, message_id: str, attachment_id: str
    ) -> tuple[Attachment, AsyncIterator[bytes]]:
        message = await self.message(account_id, message_id)
        aid = parse_id(attachment_id)
        for attachment in message.attachments:
            if attachment.id == aid:
                name = f"attachment {attachment.id}"
                return attachment, await self._opened(message, attachment.blob_hash, name)
        raise NotFound("no such attachment", code="attachment_not_found")

    async def _opened(self, message: Message, blob_hash: str, what: str) -> AsyncIterator[bytes]:
        """The blob's chunks, the first already read: a blob that is lost
        fails here, while an answer can still be a JSON error. (One found
        corrupt past its first chunk ends the transfer early instead: its
        status line is gone, and a cut download is not taken for whole.)"""
        chunks = self.blobs.stream(blob_hash)
        try:
            first = await anext(chunks, None)
        except LOST_BLOB as exc:
            log.error(
                "message %s of account %s: %s unreadable: %r",
                message.summary.id,
                message.summary.account_id,
                what,
                exc,
            )
            raise ContentUnavailable(
                f"the message's {what} is missing from storage or damaged; the message"
                " itself can still be read"
            ) from None

        async def rest() -> AsyncIterator[bytes]:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk

        return rest()

    async def update(
        self,
        account_id: int,
        message_id: str,
        *,
        is_read: bool | None = None,
        is_flagged: bool | None = None,
        folder_id: str | None = None,
    ) -> MessageSummary:
        before = await self.message(account_id, message_id)
        target = await self.folder(account_id, folder_id) if folder_id is not None else None
        updated = await self.store.update_message(
            account_id,
            before.summary.id,
            MessagePatch(
                is_read=is_read,
                is_flagged=is_flagged,
                folder_id=target.id if target is not None else None,
            ),
        )
        if updated is None:
            raise NotFound("no such message", code="message_not_found")
        if target is not None and self.bayes is not None:
            await self._learn(self.bayes, before, target)
        return updated

    # -- teaching the Bayes classifier (decision 0022) ---------------------------------

    async def _learn(self, bayes: BayesFilter, before: Message, target: Folder) -> None:
        """Inline, after the move: the next mail like this one is judged by
        what this move taught (a queue would leave a window where it is
        not). Into Junk: spam. Out of Junk (or a mail taught as spam, moved
        anywhere but Junk and Trash): ham. Trash says nothing. The store
        counts each message once, by what it was last taught."""
        account_id = before.summary.account_id
        label: str | None = None
        if target.role == "junk":
            label = SPAM
        elif target.role != "trash" and before.bayes_trained != HAM:
            if before.bayes_trained == SPAM:
                label = HAM
            else:
                junk = await self.store.folder_by_role(account_id, "junk")
                label = HAM if before.summary.folder_id == junk.id else None
        if label is None or label == before.bayes_trained:
            return
        trainings = [Training(before.summary.id, label, await self._tokens(before))]
        if label == SPAM and await bayes.needs_ham(account_id):
            trainings = [*await self._kept_mail(account_id, before.summary.id), *trainings]
        await bayes.train(account_id, trainings)

    async def _kept_mail(self, account_id: int, moved: int) -> list[Training]:
        """Ham to learn from while the account has too little: mail the user
        read and kept in the Inbox (SpamBayes' advice for a first training:
        the Inbox as ham, Junk as spam). Only mail never taught anything;
        moving one to Junk later untrains it again."""
        inbox = await self.store.folder_by_role(account_id, "inbox")
        rows = await self.store.list_messages(
            account_id, inbox.id, is_read=True, limit=KEPT_MAIL_SCAN, after=None
        )
        found = await asyncio.gather(
            *(self.store.get_message(account_id, r.id) for r in rows if r.id != moved)
        )
        kept = [m for m in found if m is not None and m.bayes_trained is None]
        tokens = await asyncio.gather(*(self._tokens(m) for m in kept))
        return [
            Training(m.summary.id, HAM, t, only_untrained=True)
            for m, t in zip(kept, tokens, strict=True)
        ]

    async def _tokens(self, message: Message) -> tuple[str, ...]:
        """The tokens worker-in judged the mail by: subject, sender, text and
        HTML as stored."""
        try:
            text, html = await asyncio.gather(
                self._blob_text(message.body_hash), self._blob_text(message.html_hash)
            )
        except LOST_BLOB:
            text = html = ""  # taught by what the metadata still has
        sender = message.summary.sender
        return mail_tokens(
            message.summary.subject, sender.email if sender else None, text, html or None
        )

    async def _blob_text(self, blob_hash: str | None) -> str:
        # Bodies are stored as UTF-8 by worker-in and the send flow.
        return (await self.blobs.get(blob_hash)).decode("utf-8", "replace") if blob_hash else ""

    async def delete(self, account_id: int, message_id: str) -> None:
        """To Trash; for good when it is in Trash already."""
        message = await self.message(account_id, message_id)
        trash = await self.store.folder_by_role(account_id, "trash")
        if message.summary.folder_id == trash.id:
            await self.store.delete_message(account_id, message.summary.id)
            # Blobs stay: other copies may name them. The blob sweep frees
            # them once nothing does (decision 0018).
        else:
            await self.update(account_id, str(message.summary.id), folder_id=str(trash.id))

    # -- address completion --------------------------------------------------------

    async def contacts(
        self, account_id: int, own_email: str, query: str, *, limit: int
    ) -> list[Contact]:
        """Past correspondents whose address or a word of whose name starts
        with ``query`` (all of them when it is empty), most frequent first:
        recipients of sent mail count twice, senders of received mail once."""
        seen: dict[str, Contact] = {}

        def count(address: Address, weight: int, at: int) -> None:
            key = address.email.casefold()
            if key == own_email.casefold():
                return
            known = seen.get(key)
            if known is None:
                seen[key] = Contact(address, weight, at)
            else:
                better = known.address if known.address.name or not address.name else address
                seen[key] = Contact(better, known.count + weight, max(known.last_at, at))

        for role, weight in (("sent", 2), ("inbox", 1), ("archive", 1)):
            folder = await self.store.folder_by_role(account_id, role)
            rows = await self.store.list_messages(
                account_id, folder.id, is_read=None, limit=CONTACT_SCAN, after=None
            )
            for row in rows:
                if role == "sent":
                    for address in row.to:
                        count(address, weight, row.received_at)
                elif row.sender is not None:
                    count(row.sender, weight, row.received_at)
        wanted = query.strip().casefold()

        def matches(contact: Contact) -> bool:
            if not wanted:
                return True
            email = contact.address.email.casefold()
            words = contact.address.name.casefold().split()
            return email.startswith(wanted) or any(w.startswith(wanted) for w in words)

        found = [c for c in seen.values() if matches(c)]
        found.sort(key=lambda c: (-c.count, -c.last_at, c.address.email))
        return found[:limit]
