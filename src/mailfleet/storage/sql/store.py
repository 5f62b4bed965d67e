"""``MetadataStore`` over SQLAlchemy Core, for any dialect that has an async
driver (aiosqlite, asyncpg). The engine setup lives with each backend; this
module only speaks portable SQL.

Reads go through ``reader``, writes through ``writer``: SQLite wants a single
writer connection that takes its lock up front (``BEGIN IMMEDIATE``), while
PostgreSQL hands both roles the same pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailfleet.storage.interfaces import (
    Account,
    Address,
    Attachment,
    Delivery,
    DkimKey,
    Domain,
    Folder,
    ListCursor,
    Message,
    MessagePatch,
    MessageSummary,
    NewMessage,
    Session,
    StaleSend,
    ThreadSummary,
    Upload,
)
from mailfleet.storage.migrations import upgrade_to_head
from mailfleet.storage.sql.group_commit import GroupCommit
from mailfleet.storage.sql.schema import (
    accounts,
    deliveries,
    dkim_keys,
    domains,
    folders,
    message_attachments,
    messages,
    sessions,
    uploads,
)
from mailfleet.storage.sql.threads import assign_threads, thread_counts, thread_heads
from mailfleet.storage.sql.transaction import Transaction

# Recipients a delivery attempt may take (``claim_deliveries``).
CLAIMABLE = ("queued", "deferred")

SUMMARY_COLUMNS = (
    messages.c.account_id,
    messages.c.id,
    messages.c.folder_id,
    messages.c.thread_id,
    messages.c.received_at,
    messages.c.sender,
    messages.c.to_addrs,
    messages.c.subject,
    messages.c.snippet,
    messages.c.is_read,
    messages.c.is_flagged,
    messages.c.has_attachments,
)


def _addresses_to_json(addresses: Sequence[Address]) -> str:
    return json.dumps([[a.email, a.name] for a in addresses], ensure_ascii=False)


def _addresses_from_json(text: str) -> tuple[Address, ...]:
    return tuple(Address(email, name) for email, name in json.loads(text))


def summary_from_row(row: Any) -> MessageSummary:
    sender = json.loads(row.sender) if row.sender else None
    return MessageSummary(
        account_id=row.account_id,
        id=row.id,
        folder_id=row.folder_id,
        thread_id=row.thread_id,
        received_at=row.received_at,
        sender=Address(sender[0], sender[1]) if sender else None,
        to=_addresses_from_json(row.to_addrs),
        subject=row.subject,
        snippet=row.snippet,
        is_read=bool(row.is_read),
        is_flagged=bool(row.is_flagged),
        has_attachments=bool(row.has_attachments),
    )


def _folder(row: Any) -> Folder:
    return Folder(row.account_id, row.id, row.name, row.role, row.total, row.unread)


def _account(row: Any) -> Account:
    return Account(
        row.id, row.email, row.name, row.password_hash, bool(row.disabled), row.created_at
    )


class SqlMetadataStore:
    def __init__(self, writer: AsyncEngine, reader: AsyncEngine | None = None) -> None:
        self.writer = writer
        self.reader = reader or writer
        # Concurrent deliveries (worker-in, the send flow) share commits.
        self._group = GroupCommit(writer)

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        async with self._write() as conn:
            await conn.run_sync(upgrade_to_head)

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _write(self) -> Transaction:
        return Transaction(self.writer, write=True)

    def _read(self) -> Transaction:
        return Transaction(self.reader, write=False)

    # -- directory --------------------------------------------------------------

    async def add_domain(self, domain: Domain) -> None:
        async with self._write() as conn:
            await conn.execute(
                domains.insert().values(
                    name=domain.name, open_signup=domain.open_signup, created_at=domain.created_at
                )
            )

    async def get_domain(self, name: str) -> Domain | None:
        async with self._read() as conn:
            row = (await conn.execute(domains.select().where(domains.c.name == name))).first()
        return Domain(row.name, bool(row.open_signup), row.created_at) if row else None

    async def list_domains(self) -> list[Domain]:
        async with self._read() as conn:
            rows = await conn.execute(domains.select().order_by(domains.c.name))
        return [Domain(r.name, bool(r.open_signup), r.created_at) for r in rows]

    async def set_domain_signup(self, name: str, open_signup: bool) -> None:
        async with self._write() as conn:
            await conn.execute(
                domains.update().where(domains.c.name == name).values(open_signup=open_signup)
            )

    async def add_dkim_key(self, key: DkimKey) -> None:
        async with self._write() as conn:
            await conn.execute(
                dkim_keys.insert().values(
                    domain=key.domain,
                    selector=key.selector,
                    private_key_pem=key.private_key_pem,
                    created_at=key.created_at,
                )
            )

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        async with self._read() as conn:
            rows = await conn.execute(
                dkim_keys.select()
                .where(dkim_keys.c.domain == domain)
                .order_by(dkim_keys.c.created_at.desc(), dkim_keys.c.selector)
            )
        return [DkimKey(r.domain, r.selector, r.private_key_pem, r.created_at) for r in rows]

    async def create_account(self, account: Account, folders_: Sequence[Folder]) -> None:
        async with self._write() as conn:
            await conn.execute(
                accounts.insert().values(
                    id=account.id,
                    email=account.email,
                    name=account.name,
                    password_hash=account.password_hash,
                    disabled=account.disabled,
                    created_at=account.created_at,
                )
            )
            await conn.execute(
                folders.insert(),
                [
                    dict(
                        account_id=f.account_id,
                        id=f.id,
                        name=f.name,
                        role=f.role,
                        total=0,
                        unread=0,
                    )
                    for f in folders_
                ],
            )

    async def get_account(self, account_id: int) -> Account | None:
        async with self._read() as conn:
            row = (await conn.execute(accounts.select().where(accounts.c.id == account_id))).first()
        return _account(row) if row else None

    async def get_account_by_email(self, email: str) -> Account | None:
        async with self._read() as conn:
            row = (await conn.execute(accounts.select().where(accounts.c.email == email))).first()
        return _account(row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        query = accounts.select().order_by(accounts.c.email)
        if domain is not None:
            query = query.where(accounts.c.email.endswith("@" + domain, autoescape=True))
        async with self._read() as conn:
            rows = await conn.execute(query)
        return [_account(r) for r in rows]

    async def update_account(
        self, account_id: int, *, password_hash: str | None = None, disabled: bool | None = None
    ) -> None:
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if disabled is not None:
            values["disabled"] = disabled
        if values:
            async with self._write() as conn:
                await conn.execute(
                    accounts.update().where(accounts.c.id == account_id).values(**values)
                )

    async def create_session(self, session: Session) -> None:
        async with self._write() as conn:
            await conn.execute(
                sessions.insert().values(
                    account_id=session.account_id,
                    token_hash=session.token_hash,
                    expires_at=session.expires_at,
                )
            )

    async def get_session(self, account_id: int, token_hash: bytes) -> Session | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sessions.select().where(
                        sessions.c.account_id == account_id, sessions.c.token_hash == token_hash
                    )
                )
            ).first()
        return Session(row.account_id, row.token_hash, row.expires_at) if row else None

    async def delete_session(self, account_id: int, token_hash: bytes) -> None:
        async with self._write() as conn:
            await conn.execute(
                sessions.delete().where(
                    sessions.c.account_id == account_id, sessions.c.token_hash == token_hash
                )
            )

    async def delete_sessions(self, account_id: int) -> None:
        async with self._write() as conn:
            await conn.execute(sessions.delete().where(sessions.c.account_id == account_id))

    # -- folders ----------------------------------------------------------------

    async def list_folders(self, account_id: int) -> list[Folder]:
        async with self._read() as conn:
            rows = await conn.execute(
                folders.select().where(folders.c.account_id == account_id).order_by(folders.c.id)
            )
        return [_folder(r) for r in rows]

    async def get_folder(self, account_id: int, folder_id: int) -> Folder | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    folders.select().where(
                        folders.c.account_id == account_id, folders.c.id == folder_id
                    )
                )
            ).first()
        return _folder(row) if row else None

    async def folder_by_role(self, account_id: int, role: str) -> Folder:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    folders.select().where(
                        folders.c.account_id == account_id, folders.c.role == role
                    )
                )
            ).one()
        return _folder(row)

    async def create_folder(self, folder: Folder) -> None:
        async with self._write() as conn:
            await conn.execute(
                folders.insert().values(
                    account_id=folder.account_id,
                    id=folder.id,
                    name=folder.name,
                    role=folder.role,
                    total=0,
                    unread=0,
                )
            )

    async def rename_folder(self, account_id: int, folder_id: int, name: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                folders.update()
                .where(folders.c.account_id == account_id, folders.c.id == folder_id)
                .values(name=name)
            )

    async def delete_folder(self, account_id: int, folder_id: int, move_to: int) -> None:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.select(folders.c.total, folders.c.unread).where(
                        folders.c.account_id == account_id, folders.c.id == folder_id
                    )
                )
            ).first()
            if row is None:
                return
            await conn.execute(
                messages.update()
                .where(messages.c.account_id == account_id, messages.c.folder_id == folder_id)
                .values(folder_id=move_to)
            )
            await _bump(conn, account_id, move_to, row.total, row.unread)
            await conn.execute(
                folders.delete().where(
                    folders.c.account_id == account_id, folders.c.id == folder_id
                )
            )

    # -- messages ---------------------------------------------------------------

    async def store_messages(self, new: Sequence[NewMessage]) -> list[int]:
        return await self._group.run(lambda conn: _store_messages(conn, new))

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
                cc=_addresses_from_json(row.cc_addrs),
                bcc=_addresses_from_json(row.bcc_addrs),
                message_id_header=row.message_id_header,
                in_reply_to=row.in_reply_to,
                references=tuple(json.loads(row.references)),
                raw_hash=row.raw_hash,
                raw_size=row.raw_size,
                body_hash=row.body_hash,
                html_hash=row.html_hash,
                spam_verdict=row.spam_verdict,
                spam_score=row.spam_score,
                attachments=tuple(
                    Attachment(
                        a.id,
                        a.filename,
                        a.content_type,
                        a.size,
                        a.blob_hash,
                        a.content_id,
                        bool(a.inline),
                    )
                    for a in attachment_rows
                ),
                delivery=tuple(
                    Delivery(d.email, d.status, d.detail, d.next_attempt_at) for d in delivery_rows
                ),
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

    async def update_message(
        self, account_id: int, message_id: int, patch: MessagePatch
    ) -> MessageSummary | None:
        where = (messages.c.account_id == account_id, messages.c.id == message_id)
        async with self._write() as conn:
            row = (await conn.execute(sa.select(*SUMMARY_COLUMNS).where(*where))).first()
            if row is None:
                return None
            values: dict[str, Any] = {}
            was_unread = not row.is_read
            now_unread = was_unread if patch.is_read is None else not patch.is_read
            target = row.folder_id if patch.folder_id is None else patch.folder_id
            if patch.is_read is not None and patch.is_read != bool(row.is_read):
                values["is_read"] = patch.is_read
            if patch.is_flagged is not None and patch.is_flagged != bool(row.is_flagged):
                values["is_flagged"] = patch.is_flagged
            if target != row.folder_id:
                values["folder_id"] = target
            if not values:
                return summary_from_row(row)
            await conn.execute(messages.update().where(*where).values(**values))
            if target != row.folder_id:
                await _bump(conn, account_id, row.folder_id, -1, -int(was_unread))
                await _bump(conn, account_id, target, 1, int(now_unread))
            elif was_unread != now_unread:
                await _bump(conn, account_id, target, 0, int(now_unread) - int(was_unread))
            row = (await conn.execute(sa.select(*SUMMARY_COLUMNS).where(*where))).one()
            return summary_from_row(row)

    async def delete_message(self, account_id: int, message_id: int) -> bool:
        where = (messages.c.account_id == account_id, messages.c.id == message_id)
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.select(messages.c.folder_id, messages.c.is_read).where(*where)
                )
            ).first()
            if row is None:
                return False
            await conn.execute(messages.delete().where(*where))
            await conn.execute(
                message_attachments.delete().where(
                    message_attachments.c.account_id == account_id,
                    message_attachments.c.message_id == message_id,
                )
            )
            await conn.execute(
                deliveries.delete().where(
                    deliveries.c.account_id == account_id, deliveries.c.message_id == message_id
                )
            )
            await _bump(conn, account_id, row.folder_id, -1, -int(not row.is_read))
            return True

    async def set_deliveries(
        self, account_id: int, message_id: int, updates: Sequence[Delivery]
    ) -> None:
        async def step(conn: AsyncConnection) -> None:
            for delivery in updates:
                await conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.account_id == account_id,
                        deliveries.c.message_id == message_id,
                        deliveries.c.email == delivery.email,
                    )
                    .values(
                        status=delivery.status,
                        detail=delivery.detail,
                        next_attempt_at=delivery.next_attempt_at,
                        claimed_until=None,
                        claimed_by=None,
                    )
                )

        # worker-out records each delivery as it happens: concurrent
        # deliveries share one commit.
        await self._group.run(step)

    async def claim_deliveries(
        self,
        account_id: int,
        message_id: int,
        emails: Sequence[str],
        *,
        claimant: str,
        now_ms: int,
        until_ms: int,
    ) -> list[Delivery]:
        if not emails:
            return []
        # One UPDATE ... RETURNING (SQLite 3.35+, PostgreSQL): the rows it
        # returns are the ones it took; a concurrent claim waits on the row
        # lock and then no longer matches.
        statement = (
            deliveries.update()
            .where(
                deliveries.c.account_id == account_id,
                deliveries.c.message_id == message_id,
                deliveries.c.email.in_(list(emails)),
                deliveries.c.status.in_(CLAIMABLE),
                sa.or_(
                    deliveries.c.claimed_until.is_(None),
                    deliveries.c.claimed_until <= now_ms,
                    deliveries.c.claimed_by == claimant,
                ),
            )
            .values(claimed_until=until_ms, claimed_by=claimant)
            .returning(
                deliveries.c.email,
                deliveries.c.status,
                deliveries.c.detail,
                deliveries.c.next_attempt_at,
            )
        )

        async def step(conn: AsyncConnection) -> list[Delivery]:
            rows = (await conn.execute(statement)).all()
            return [Delivery(r.email, r.status, r.detail, r.next_attempt_at) for r in rows]

        return await self._group.run(step)

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
        return [Delivery(r.email, r.status, r.detail, r.next_attempt_at) for r in rows]

    # -- threads (mailbox/threads.py; assignment is in store_messages) -----------

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

    # -- uploads ----------------------------------------------------------------

    async def create_upload(self, upload: Upload) -> None:
        async with self._write() as conn:
            await conn.execute(
                uploads.insert().values(
                    account_id=upload.account_id,
                    id=upload.id,
                    filename=upload.filename,
                    content_type=upload.content_type,
                    size=upload.size,
                    blob_hash=upload.blob_hash,
                    created_at=upload.created_at,
                )
            )

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


async def _store_messages(conn: AsyncConnection, new: Sequence[NewMessage]) -> list[int]:
    """Set-wise: one lookup of known ingest keys per account, one insert per
    table, one counter update per folder, whatever the batch size."""
    ids: list[int] = []
    known: dict[tuple[int, str], int] = {}
    for account_id in {m.account_id for m in new}:
        keys = [m.ingest_key for m in new if m.account_id == account_id]
        for start in range(0, len(keys), 500):
            rows = await conn.execute(
                sa.select(messages.c.ingest_key, messages.c.id).where(
                    messages.c.account_id == account_id,
                    messages.c.ingest_key.in_(keys[start : start + 500]),
                )
            )
            known.update({(account_id, r.ingest_key): r.id for r in rows})
    fresh: list[NewMessage] = []
    for m in new:
        key = (m.account_id, m.ingest_key)
        if key not in known:
            known[key] = m.id
            fresh.append(m)
        ids.append(known[key])
    if not fresh:
        return ids
    fresh = await assign_threads(conn, fresh)  # mailbox/threads.py
    await conn.execute(messages.insert(), [message_row(m) for m in fresh])
    if attachments_ := attachment_rows(fresh):
        await conn.execute(message_attachments.insert(), attachments_)
    if deliveries_ := delivery_rows(fresh):
        await conn.execute(deliveries.insert(), deliveries_)
    for (account_id, folder_id), (total, unread) in folder_counts(fresh).items():
        await _bump(conn, account_id, folder_id, total, unread)
    return ids


def attachment_rows(fresh: Sequence[NewMessage]) -> list[dict[str, Any]]:
    return [
        dict(
            account_id=m.account_id,
            message_id=m.id,
            id=a.id,
            position=i,
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            blob_hash=a.blob_hash,
            content_id=a.content_id,
            inline=a.inline,
        )
        for m in fresh
        for i, a in enumerate(m.attachments)
    ]


def delivery_rows(fresh: Sequence[NewMessage]) -> list[dict[str, Any]]:
    return [
        dict(
            account_id=m.account_id,
            message_id=m.id,
            email=d.email,
            status=d.status,
            detail=d.detail,
            next_attempt_at=d.next_attempt_at,
            claimed_until=None,
            claimed_by=None,
        )
        for m in fresh
        for d in m.delivery
    ]


def folder_counts(fresh: Sequence[NewMessage]) -> dict[tuple[int, int], tuple[int, int]]:
    """(account_id, folder_id) → (messages, unread ones) the batch adds."""
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    for m in fresh:
        total, unread = counts.get((m.account_id, m.folder_id), (0, 0))
        counts[(m.account_id, m.folder_id)] = (total + 1, unread + (0 if m.is_read else 1))
    return counts


def message_row(m: NewMessage) -> dict[str, Any]:
    return dict(
        account_id=m.account_id,
        id=m.id,
        folder_id=m.folder_id,
        thread_id=m.thread_id,
        received_at=m.received_at,
        ingest_key=m.ingest_key,
        sender=json.dumps([m.sender.email, m.sender.name], ensure_ascii=False)
        if m.sender
        else None,
        to_addrs=_addresses_to_json(m.to),
        cc_addrs=_addresses_to_json(m.cc),
        bcc_addrs=_addresses_to_json(m.bcc),
        subject=m.subject,
        snippet=m.snippet,
        message_id_header=m.message_id_header,
        in_reply_to=m.in_reply_to,
        references=json.dumps(list(m.references)),
        raw_hash=m.raw_hash,
        raw_size=m.raw_size,
        body_hash=m.body_hash,
        html_hash=m.html_hash,
        is_read=m.is_read,
        is_flagged=m.is_flagged,
        has_attachments=bool(m.attachments),
        spam_verdict=m.spam_verdict,
        spam_score=m.spam_score,
    )


async def _bump(
    conn: AsyncConnection, account_id: int, folder_id: int, total: int, unread: int
) -> None:
    if total or unread:
        await conn.execute(
            folders.update()
            .where(folders.c.account_id == account_id, folders.c.id == folder_id)
            .values(total=folders.c.total + total, unread=folders.c.unread + unread)
        )
