"""The reads of a ``MailboxStore`` over SQLAlchemy Core: folder listings by
keyset, messages, threads, delivery status, uploads, the change log. Portable
SQL, shared by every SQL engine; each engine brings its own write path
(SQLite: ``storage/embedded/sqlite_mailbox.py``) and runs these statements on
its driver (``storage/sql/query.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa

from mailfleet.storage.interfaces import (
    Change,
    ChangePage,
    Delivery,
    Folder,
    ListCursor,
    Message,
    MessageSummary,
    StaleSend,
    ThreadSummary,
    Upload,
)
from mailfleet.storage.sql.query import Query, ReadSession, ReadSessions
from mailfleet.storage.sql.rows import (
    SUMMARY_COLUMNS,
    addresses_from_json,
    attachment_from_row,
    delivery_from_row,
    folder_from_row,
    reasons_from_json,
    summary_from_row,
)
from mailfleet.storage.sql.schema import (
    changes,
    deliveries,
    folders,
    mailbox_state,
    message_attachments,
    messages,
    uploads,
)
from mailfleet.storage.sql.threads import thread_counts, thread_heads

P = sa.bindparam
_ACCOUNT: sa.BindParameter[int] = P("account_id")
_KEYSET = sa.tuple_(messages.c.received_at, messages.c.id) < sa.tuple_(
    P("after_received_at"), P("after_id")
)

_PING = Query(sa.select(sa.literal(1)))
_FOLDERS = Query(folders.select().where(folders.c.account_id == _ACCOUNT).order_by(folders.c.id))
_FOLDER = Query(
    folders.select().where(folders.c.account_id == _ACCOUNT, folders.c.id == P("folder_id"))
)
_FOLDER_BY_ROLE = Query(
    folders.select().where(folders.c.account_id == _ACCOUNT, folders.c.role == P("role"))
)
_MESSAGE = Query(
    sa.select(
        *SUMMARY_COLUMNS,
        *(c for c in messages.columns if c.name not in {s.name for s in SUMMARY_COLUMNS}),
    ).where(messages.c.account_id == _ACCOUNT, messages.c.id == P("message_id"))
)
_ATTACHMENTS = Query(
    message_attachments.select()
    .where(
        message_attachments.c.account_id == _ACCOUNT,
        message_attachments.c.message_id == P("message_id"),
    )
    .order_by(message_attachments.c.position)
)
_DELIVERIES = Query(
    deliveries.select()
    .where(deliveries.c.account_id == _ACCOUNT, deliveries.c.message_id == P("message_id"))
    .order_by(deliveries.c.email)
)
_BY_HEADER = Query(
    sa.select(*SUMMARY_COLUMNS)
    .where(messages.c.account_id == _ACCOUNT, messages.c.message_id_header == P("header"))
    .limit(1)
)
_STALE_SENDS = Query(
    sa.select(
        deliveries.c.account_id,
        deliveries.c.message_id,
        deliveries.c.email,
        messages.c.raw_hash,
        messages.c.sender,
    )
    .select_from(
        deliveries.join(
            messages,
            sa.and_(
                messages.c.account_id == deliveries.c.account_id,
                messages.c.id == deliveries.c.message_id,
            ),
        )
    )
    .where(deliveries.c.status == "queued", messages.c.received_at < P("received_before"))
    .order_by(deliveries.c.account_id, deliveries.c.message_id)
    .limit(P("limit"))
)
_THREAD = Query(
    sa.select(*SUMMARY_COLUMNS)
    .where(messages.c.account_id == _ACCOUNT, messages.c.thread_id == P("thread_id"))
    .order_by(messages.c.received_at, messages.c.id)
    .limit(P("limit"))
)
_UPLOAD = Query(
    uploads.select().where(uploads.c.account_id == _ACCOUNT, uploads.c.id == P("upload_id"))
)
_STATE = Query(
    sa.select(mailbox_state.c.modseq, mailbox_state.c.kept_after).where(
        mailbox_state.c.account_id == _ACCOUNT
    )
)
_CHANGES = Query(
    sa.select(changes.c.seq, changes.c.kind, changes.c.data, changes.c.at)
    .where(changes.c.account_id == _ACCOUNT, changes.c.seq > P("after"))
    .order_by(changes.c.seq)
    .limit(P("limit"))
)


# Hashes per probe of ``blob_references``: a fixed shape, compiled once; a
# short batch is padded with "" (no hash).
REFERENCE_BATCH = 100
_HASHES: list[sa.BindParameter[str]] = [P(f"h{i}") for i in range(REFERENCE_BATCH)]
_REFERENCES = Query(
    sa.union(
        sa.select(messages.c.raw_hash.label("hash")).where(messages.c.raw_hash.in_(_HASHES)),
        # "IS NOT NULL" spelled out: the partial indexes are chosen for it.
        sa.select(messages.c.body_hash).where(
            messages.c.body_hash.is_not(None), messages.c.body_hash.in_(_HASHES)
        ),
        sa.select(messages.c.html_hash).where(
            messages.c.html_hash.is_not(None), messages.c.html_hash.in_(_HASHES)
        ),
        sa.select(message_attachments.c.blob_hash).where(
            message_attachments.c.blob_hash.in_(_HASHES)
        ),
        sa.select(uploads.c.blob_hash).where(uploads.c.blob_hash.in_(_HASHES)),
    )
)


async def blob_references(reads: ReadSessions, hashes: Sequence[str]) -> set[str]:
    """``MailboxStore.blob_references`` on one database: index probes,
    ``REFERENCE_BATCH`` hashes a statement."""
    found: set[str] = set()
    wanted = list(dict.fromkeys(hashes))
    for start in range(0, len(wanted), REFERENCE_BATCH):
        batch = wanted[start : start + REFERENCE_BATCH]
        params = {f"h{i}": batch[i] if i < len(batch) else "" for i in range(REFERENCE_BATCH)}
        async with reads.read() as session:
            rows = await session.all(_REFERENCES, **params)
        found.update(str(r["hash"]) for r in rows)
    found.discard("")
    return found


@cache
def _listing(filtered: bool, keyset: bool) -> Query:
    """A folder's page, newest first: four shapes, each compiled once."""
    query = sa.select(*SUMMARY_COLUMNS).where(
        messages.c.account_id == _ACCOUNT, messages.c.folder_id == P("folder_id")
    )
    if filtered:
        query = query.where(messages.c.is_read == P("is_read"))
    if keyset:
        query = query.where(_KEYSET)
    return Query(
        query.order_by(messages.c.received_at.desc(), messages.c.id.desc()).limit(P("limit"))
    )


@cache
def _thread_heads(filtered: bool, keyset: bool) -> Query:
    return Query(
        thread_heads(
            _ACCOUNT,
            P("folder_id"),
            SUMMARY_COLUMNS,
            is_read=P("is_read") if filtered else None,
            keyset=_KEYSET if keyset else None,
            limit=P("limit"),
        )
    )


@cache
def _thread_counts(n: int) -> Query:
    """Per number of threads on the page (at most the page size)."""
    return Query(thread_counts(_ACCOUNT, [P(f"t{i}") for i in range(n)]))


def _page_params(
    account_id: int, folder_id: int, is_read: bool | None, limit: int, after: ListCursor | None
) -> dict[str, Any]:
    """The parameters of ``_listing`` and ``_thread_heads``."""
    params = {"account_id": account_id, "folder_id": folder_id, "is_read": is_read, "limit": limit}
    if after is not None:
        params.update(after_received_at=after.received_at, after_id=after.id)
    return params


async def stale_sends(reads: ReadSessions, received_before: int, limit: int) -> list[StaleSend]:
    """``MailboxStore.stale_sends`` on one database."""
    async with reads.read() as session:
        rows = list(await session.all(_STALE_SENDS, received_before=received_before, limit=limit))

    def key(r: Any) -> tuple[int, int]:
        return r["account_id"], r["message_id"]

    if len(rows) == limit and key(rows[0]) != key(rows[-1]):
        # The last message may be cut short by the limit: the next sweep
        # takes it whole.
        last = key(rows[-1])
        rows = [r for r in rows if key(r) != last]
    found: dict[tuple[int, int], StaleSend] = {}
    for r in rows:
        previous = found.get(key(r))
        sender = orjson.loads(r["sender"])[0] if r["sender"] else ""
        found[key(r)] = StaleSend(
            r["account_id"],
            r["message_id"],
            r["raw_hash"],
            sender,
            (*(previous.recipients if previous else ()), r["email"]),
        )
    return list(found.values())


class SqlMailboxReads:
    """Every read is one session of ``reads``: one transaction, one snapshot."""

    reads: ReadSessions

    def _read(self, account_id: int | None, *, stale_ok: bool = False) -> Any:
        """The session for a read of ``account_id``'s mailbox. ``stale_ok``:
        a listing or a search, which a sharded store may serve from a
        replica (a store of one database has one source for every account)."""
        return self.reads.read()

    async def ping(self) -> None:
        async with self._read(None) as session:
            await session.first(_PING)

    async def list_folders(self, account_id: int) -> list[Folder]:
        async with self._read(account_id) as session:
            rows = await session.all(_FOLDERS, account_id=account_id)
        return [folder_from_row(r) for r in rows]

    async def get_folder(self, account_id: int, folder_id: int) -> Folder | None:
        async with self._read(account_id) as session:
            row = await session.first(_FOLDER, account_id=account_id, folder_id=folder_id)
        return folder_from_row(row) if row else None

    async def folder_by_role(self, account_id: int, role: str) -> Folder:
        async with self._read(account_id) as session:
            row = await session.first(_FOLDER_BY_ROLE, account_id=account_id, role=role)
        if row is None:
            raise LookupError(f"account {account_id} has no {role} folder")
        return folder_from_row(row)

    async def list_messages(
        self,
        account_id: int,
        folder_id: int,
        *,
        is_read: bool | None,
        limit: int,
        after: ListCursor | None,
    ) -> list[MessageSummary]:
        query = _listing(is_read is not None, after is not None)
        async with self._read(account_id, stale_ok=True) as session:
            rows = await session.all(
                query, **_page_params(account_id, folder_id, is_read, limit, after)
            )
        return [summary_from_row(r) for r in rows]

    async def get_message(self, account_id: int, message_id: int) -> Message | None:
        async with self._read(account_id) as session:
            return await self._message(session, account_id, message_id)

    @staticmethod
    async def _message(session: ReadSession, account_id: int, message_id: int) -> Message | None:
        row = await session.first(_MESSAGE, account_id=account_id, message_id=message_id)
        if row is None:
            return None
        attachments: Any = (
            await session.all(_ATTACHMENTS, account_id=account_id, message_id=message_id)
            # Inline (cid:) images come with HTML only and do not count in
            # has_attachments.
            if row["has_attachments"] or row["html_hash"] is not None
            else ()
        )
        delivery = await session.all(_DELIVERIES, account_id=account_id, message_id=message_id)
        return Message(
            summary=summary_from_row(row),
            cc=addresses_from_json(row["cc_addrs"]),
            bcc=addresses_from_json(row["bcc_addrs"]),
            message_id_header=row["message_id_header"],
            in_reply_to=row["in_reply_to"],
            references=tuple(orjson.loads(row["references"])),
            raw_hash=row["raw_hash"],
            raw_size=row["raw_size"],
            body_hash=row["body_hash"],
            html_hash=row["html_hash"],
            spam_verdict=row["spam_verdict"],
            spam_score=row["spam_score"],
            attachments=tuple(attachment_from_row(a) for a in attachments),
            delivery=tuple(delivery_from_row(d) for d in delivery),
            spam_reasons=reasons_from_json(row["spam_reasons"]),
            filter_headers=row["filter_headers"] or "",
            bayes_trained=row["bayes_trained"],
        )

    async def find_by_message_id_header(
        self, account_id: int, header: str
    ) -> MessageSummary | None:
        async with self._read(account_id) as session:
            row = await session.first(_BY_HEADER, account_id=account_id, header=header)
        return summary_from_row(row) if row else None

    async def stale_sends(self, received_before: int, limit: int) -> list[StaleSend]:
        return await stale_sends(self.reads, received_before, limit)

    async def blob_references(self, hashes: Sequence[str]) -> set[str]:
        return await blob_references(self.reads, hashes)

    async def get_deliveries(self, account_id: int, message_id: int) -> list[Delivery]:
        async with self._read(account_id) as session:
            rows = await session.all(_DELIVERIES, account_id=account_id, message_id=message_id)
        return [delivery_from_row(r) for r in rows]

    async def thread_messages(
        self, account_id: int, thread_id: int, *, limit: int
    ) -> list[MessageSummary]:
        async with self._read(account_id) as session:
            rows = await session.all(
                _THREAD, account_id=account_id, thread_id=thread_id, limit=limit
            )
        return [summary_from_row(r) for r in rows]

    async def list_threads(
        self,
        account_id: int,
        folder_id: int,
        *,
        is_read: bool | None,
        limit: int,
        after: ListCursor | None,
    ) -> list[ThreadSummary]:
        query = _thread_heads(is_read is not None, after is not None)
        async with self._read(account_id, stale_ok=True) as session:
            rows = await session.all(
                query, **_page_params(account_id, folder_id, is_read, limit, after)
            )
            heads = [summary_from_row(r) for r in rows]
            counts: dict[int, int] = {}
            if heads:
                ids = {f"t{i}": h.thread_id for i, h in enumerate(heads)}
                found = await session.all(_thread_counts(len(ids)), account_id=account_id, **ids)
                counts = {int(r[0]): int(r[1]) for r in found}
        return [ThreadSummary(h, counts.get(h.thread_id, 1)) for h in heads]

    async def get_upload(self, account_id: int, upload_id: int) -> Upload | None:
        async with self._read(account_id) as session:
            row = await session.first(_UPLOAD, account_id=account_id, upload_id=upload_id)
        if row is None:
            return None
        return Upload(
            row["account_id"],
            row["id"],
            row["filename"],
            row["content_type"],
            row["size"],
            row["blob_hash"],
            row["created_at"],
        )

    async def head(self, account_id: int) -> int:
        # From where listings are read: a replica's head is never ahead of
        # what a listing read after it from the same replica shows.
        async with self._read(account_id, stale_ok=True) as session:
            state = await session.first(_STATE, account_id=account_id)
        return int(state[0]) if state else 0

    async def changes(self, account_id: int, after: int, *, limit: int) -> ChangePage:
        async with self._read(account_id) as session:
            state = await session.first(_STATE, account_id=account_id)
            if state is None:
                return ChangePage([], 0, reset=after != 0)
            head, kept_after = int(state[0]), int(state[1])
            if after < kept_after or after > head:
                return ChangePage([], head, reset=True)
            rows = await session.all(_CHANGES, account_id=account_id, after=after, limit=limit)
        found = [Change(int(r[0]), r[1], orjson.loads(r[2]), int(r[3])) for r in rows]
        return ChangePage(found, head)
