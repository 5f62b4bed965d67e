"""The reads of a ``MailboxStore`` over SQLAlchemy Core: folder listings by
keyset, messages, threads, delivery status, uploads, the change log. Portable
SQL, shared by every SQL engine; each engine brings its own write path
(SQLite: ``storage/embedded/sqlite_mailbox.py``)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

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
from mailfleet.storage.sql.rows import (
    SUMMARY_COLUMNS,
    addresses_from_json,
    attachment_from_row,
    delivery_from_row,
    folder_from_row,
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
from mailfleet.storage.sql.transaction import Transaction


class SqlMailboxReads:
    """Every read goes through ``reader``: one transaction, one snapshot."""

    reader: AsyncEngine

    def _read(self) -> Transaction:
        return Transaction(self.reader, write=False)

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def list_folders(self, account_id: int) -> list[Folder]:
        async with self._read() as conn:
            rows = await conn.execute(
                folders.select().where(folders.c.account_id == account_id).order_by(folders.c.id)
            )
        return [folder_from_row(r) for r in rows]

    async def get_folder(self, account_id: int, folder_id: int) -> Folder | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    folders.select().where(
                        folders.c.account_id == account_id, folders.c.id == folder_id
                    )
                )
            ).first()
        return folder_from_row(row) if row else None

    async def folder_by_role(self, account_id: int, role: str) -> Folder:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    folders.select().where(
                        folders.c.account_id == account_id, folders.c.role == role
                    )
                )
            ).one()
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
        query = sa.select(*SUMMARY_COLUMNS).where(
            messages.c.account_id == account_id, messages.c.folder_id == folder_id
        )
        if is_read is not None:
            query = query.where(messages.c.is_read == is_read)
        if after is not None:
            query = query.where(
                sa.tuple_(messages.c.received_at, messages.c.id)
                < sa.tuple_(sa.literal(after.received_at), sa.literal(after.id))
            )
        query = query.order_by(messages.c.received_at.desc(), messages.c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [summary_from_row(r) for r in rows]

    async def get_message(self, account_id: int, message_id: int) -> Message | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    messages.select().where(
                        messages.c.account_id == account_id, messages.c.id == message_id
                    )
                )
            ).first()
            if row is None:
                return None
            attachment_rows: Any = (
                await conn.execute(
                    message_attachments.select()
                    .where(
                        message_attachments.c.account_id == account_id,
                        message_attachments.c.message_id == message_id,
                    )
                    .order_by(message_attachments.c.position)
                )
                if row.has_attachments
                else []
            )
            delivery_rows = await conn.execute(
                deliveries.select()
                .where(deliveries.c.account_id == account_id, deliveries.c.message_id == message_id)
                .order_by(deliveries.c.email)
            )
            return Message(
                summary=summary_from_row(row),
                cc=addresses_from_json(row.cc_addrs),
                bcc=addresses_from_json(row.bcc_addrs),
                message_id_header=row.message_id_header,
                in_reply_to=row.in_reply_to,
                references=tuple(json.loads(row.references)),
                raw_hash=row.raw_hash,
                raw_size=row.raw_size,
                body_hash=row.body_hash,
                html_hash=row.html_hash,
                spam_verdict=row.spam_verdict,
                spam_score=row.spam_score,
                attachments=tuple(attachment_from_row(a) for a in attachment_rows),
                delivery=tuple(delivery_from_row(d) for d in delivery_rows),
            )

    async def find_by_message_id_header(
        self, account_id: int, header: str
    ) -> MessageSummary | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(*SUMMARY_COLUMNS)
                    .where(
                        messages.c.account_id == account_id,
                        messages.c.message_id_header == header,
                    )
                    .limit(1)
                )
            ).first()
        return summary_from_row(row) if row else None

    async def stale_sends(self, received_before: int, limit: int) -> list[StaleSend]:
        query = (
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
            .where(deliveries.c.status == "queued", messages.c.received_at < received_before)
            .order_by(deliveries.c.account_id, deliveries.c.message_id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        if len(rows) == limit and rows[0][:2] != rows[-1][:2]:
            # The last message may be cut short by the limit: the next sweep
            # takes it whole.
            last = rows[-1][:2]
            rows = [r for r in rows if r[:2] != last]
        found: dict[tuple[int, int], StaleSend] = {}
        for r in rows:
            key = (r.account_id, r.message_id)
            previous = found.get(key)
            sender = json.loads(r.sender)[0] if r.sender else ""
            found[key] = StaleSend(
                r.account_id,
                r.message_id,
                r.raw_hash,
                sender,
                (*(previous.recipients if previous else ()), r.email),
            )
        return list(found.values())

    async def get_deliveries(self, account_id: int, message_id: int) -> list[Delivery]:
        async with self._read() as conn:
            rows = await conn.execute(
                deliveries.select().where(
                    deliveries.c.account_id == account_id,
                    deliveries.c.message_id == message_id,
                )
            )
        return [delivery_from_row(r) for r in rows]

    async def thread_messages(
        self, account_id: int, thread_id: int, *, limit: int
    ) -> list[MessageSummary]:
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(*SUMMARY_COLUMNS)
                .where(messages.c.account_id == account_id, messages.c.thread_id == thread_id)
                .order_by(messages.c.received_at, messages.c.id)
                .limit(limit)
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
        async with self._read() as conn:
            heads = [
                summary_from_row(r)
                for r in await conn.execute(
                    thread_heads(
                        account_id,
                        folder_id,
                        SUMMARY_COLUMNS,
                        is_read=is_read,
                        limit=limit,
                        after=after,
                    )
                )
            ]
            counts: dict[int, int] = {}
            if heads:
                rows = await conn.execute(thread_counts(account_id, [h.thread_id for h in heads]))
                counts = {int(r[0]): int(r[1]) for r in rows}
        return [ThreadSummary(h, counts.get(h.thread_id, 1)) for h in heads]

    async def get_upload(self, account_id: int, upload_id: int) -> Upload | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    uploads.select().where(
                        uploads.c.account_id == account_id, uploads.c.id == upload_id
                    )
                )
            ).first()
        if row is None:
            return None
        return Upload(
            row.account_id,
            row.id,
            row.filename,
            row.content_type,
            row.size,
            row.blob_hash,
            row.created_at,
        )

    async def changes(self, account_id: int, after: int, *, limit: int) -> ChangePage:
        async with self._read() as conn:
            state = (
                await conn.execute(
                    sa.select(mailbox_state.c.modseq, mailbox_state.c.kept_after).where(
                        mailbox_state.c.account_id == account_id
                    )
                )
            ).first()
            if state is None:
                return ChangePage([], 0, reset=after != 0)
            head, kept_after = int(state.modseq), int(state.kept_after)
            if after < kept_after or after > head:
                return ChangePage([], head, reset=True)
            rows = await conn.execute(
                sa.select(changes.c.seq, changes.c.kind, changes.c.data, changes.c.at)
                .where(changes.c.account_id == account_id, changes.c.seq > after)
                .order_by(changes.c.seq)
                .limit(limit)
            )
            found = [Change(int(r.seq), r.kind, json.loads(r.data), int(r.at)) for r in rows]
        return ChangePage(found, head)
