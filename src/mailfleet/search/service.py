"""Search for users (``GET /v1/search``) and the index rebuild for operators
(``mailfleet index rebuild``)."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from mailfleet.errors import BadInput
from mailfleet.mailbox.service import Page
from mailfleet.search.document import build_document
from mailfleet.search.query import And, Filter, Node, Not, Or, QuerySyntaxError, parse
from mailfleet.storage.errors import BlobMissing
from mailfleet.storage.interfaces import (
    BlobStore,
    DirectoryStore,
    Folder,
    ListCursor,
    MailboxStore,
    MessageSummary,
    SearchDocument,
    SearchIndex,
)

log = logging.getLogger("mailfleet.search")
# Like Gmail: mail in the bin or in spam turns up only when asked for with in:.
HIDDEN_ROLES = ("trash", "junk")
REBUILD_BATCH = 500


def _filters(node: Node) -> Iterator[Filter]:
    if isinstance(node, Filter):
        yield node
    elif isinstance(node, Not):
        yield from _filters(node.node)
    elif isinstance(node, And | Or):
        for child in node.nodes:
            yield from _filters(child)


def resolve_folders(node: Node, folders: list[Folder]) -> dict[str, frozenset[int]]:
    """Folder ids for each ``in:`` value: a role (inbox, sent, trash, junk or
    spam ...) or a folder name, case-insensitive. Unknown → BadInput."""
    out: dict[str, frozenset[int]] = {}
    for f in _filters(node):
        if f.kind != "in" or str(f.value) in out:
            continue
        wanted = str(f.value).casefold()
        role = "junk" if wanted == "spam" else wanted
        ids = frozenset(x.id for x in folders if x.role == role or x.name.casefold() == wanted)
        if not ids:
            raise BadInput(f"no folder named {f.value!r} (in:{f.value})", code="bad_query")
        out[str(f.value)] = ids
    return out


def with_default_scope(node: Node) -> Node:
    """Without an ``in:``, Trash and Junk are left out."""
    if any(f.kind == "in" for f in _filters(node)):
        return node
    hidden = tuple(Not(Filter("in", role)) for role in HIDDEN_ROLES)
    children = node.nodes if isinstance(node, And) else (node,)
    return And((*children, *hidden))


def encode_search_cursor(message_id: int) -> str:
    return base64.urlsafe_b64encode(f"s{message_id}".encode()).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("cursor is not one this server gave out", code="invalid_cursor") from None


class SearchService:
    def __init__(
        self,
        directory: DirectoryStore,
        mailboxes: MailboxStore,
        index: SearchIndex,
        blobs: BlobStore,
    ) -> None:
        self.directory = directory
        self.mailboxes = mailboxes
        self.index = index
        self.blobs = blobs

    async def search(self, account_id: int, q: str, *, limit: int, cursor: str | None) -> Page:
        try:
            node = parse(q)
        except QuerySyntaxError as exc:
            raise BadInput(str(exc), code="bad_query") from None
        node = with_default_scope(node)
        folders = await self.mailboxes.list_folders(account_id)
        scope = resolve_folders(node, folders)
        before = decode_search_cursor(cursor) if cursor else None
        rows = await self.index.search(
            account_id, node, folders=scope, limit=limit + 1, before_id=before
        )
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items, encode_search_cursor(items[-1].id) if more else None)

    async def rebuild(
        self,
        account_id: int | None = None,
        *,
        resume: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Indexes every stored message not in the index yet: of one account,
        or of all after emptying the index (whole rebuild; ``resume`` keeps
        what an interrupted rebuild indexed). Returns how many messages were
        indexed; ``progress`` hears how many messages each batch read."""
        if account_id is None:
            if not resume:
                await self.index.clear()
            accounts = [a.id for a in await self.directory.list_accounts()]
        else:
            accounts = [account_id]
        added = 0
        for account in accounts:
            batch: list[SearchDocument] = []
            async for document in self._documents(account):
                batch.append(document)
                if len(batch) >= REBUILD_BATCH:
                    added += await self.index.index(batch)
                    if progress is not None:
                        progress(len(batch))
                    batch = []
            if batch:
                added += await self.index.index(batch)
                if progress is not None:
                    progress(len(batch))
        return added

    async def _documents(self, account_id: int) -> AsyncIterator[SearchDocument]:
        for folder in await self.mailboxes.list_folders(account_id):
            after = None
            while True:
                page = await self.mailboxes.list_messages(
                    account_id, folder.id, is_read=None, limit=REBUILD_BATCH, after=after
                )
                for summary in page:
                    document = await self._document(account_id, summary)
                    if document is not None:
                        yield document
                if len(page) < REBUILD_BATCH:
                    break
                after = ListCursor(page[-1].received_at, page[-1].id)

    async def _document(self, account_id: int, summary: MessageSummary) -> SearchDocument | None:
        message = await self.mailboxes.get_message(account_id, summary.id)
        if message is None:  # deleted meanwhile
            return None
        body = b""
        if message.body_hash:
            try:
                body = await self.blobs.get(message.body_hash)
            except BlobMissing:
                log.warning("message %s: body blob missing", summary.id)
        return build_document(
            account_id=account_id,
            message_id=summary.id,
            subject=summary.subject,
            sender=summary.sender,
            recipients=(*summary.to, *message.cc, *message.bcc),
            body=body.decode("utf-8", "replace"),
            attachment_names=(a.filename for a in message.attachments),
        )
