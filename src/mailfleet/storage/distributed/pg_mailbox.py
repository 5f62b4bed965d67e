"""``MailboxStore`` on PostgreSQL shards: reads are the portable statements of
``storage/sql/mailbox_reads.py`` run on the account's shard (listings on its
replica when one is configured); writes are asyncpg transactions on the
shard's primary, each recording its changes in the account's change log in
the same transaction, as SQLite's do (``storage/embedded/sqlite_mailbox.py``).

Every write transaction first locks the ``mailbox_state`` rows of the
accounts it touches, in account order (no deadlocks between two writes).
That serializes one account's writes (thread assignment and ingest keys see
each other, change sequence numbers follow commit order) while other
accounts write side by side, and it is the fence of ``account move``: a
shard that no longer holds the account, or is moving it, refuses the write
and the store follows the account's new placement (decision 0016).

A batch of copies for accounts on several shards (the send flow's Sent copy
and local Inbox copies) is one transaction per shard: each part is atomic,
and the parts are idempotent by ingest key, so a caller that retries after
a failure completes the batch without a second copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa

from mailfleet.search.document import document_for
from mailfleet.storage.distributed.pg_changes import PgChangeLog
from mailfleet.storage.distributed.pg_search import insert_documents
from mailfleet.storage.distributed.pg_shards import PLACEMENT_TTL_SECONDS, PgCluster
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.interfaces import (
    Delivery,
    Folder,
    MessagePatch,
    MessageSummary,
    NewMessage,
    StaleSend,
    Upload,
)
from mailfleet.storage.sql.changes import message_state
from mailfleet.storage.sql.mailbox_reads import SqlMailboxReads, blob_references, stale_sends
from mailfleet.storage.sql.rows import (
    CLAIMABLE,
    SUMMARY_COLUMNS,
    attachment_rows,
    delivery_rows,
    folder_counts,
    message_row,
    summary_from_row,
)
from mailfleet.storage.sql.schema import deliveries, message_attachments, messages, uploads
from mailfleet.storage.sql.threads import keys_by_account, rethreaded
from mailfleet.threadkeys import ThreadKey, plan_threads

T = TypeVar("T")
OnCommit = Callable[[Mapping[int, int]], Awaitable[None]]
Step = Callable[[asyncpg.Connection, PgChangeLog], Awaitable[T]]

# How long a write waits for its account to finish moving before it answers
# "try later" (HTTP 503, SMTP 451).
MOVE_WAIT_SECONDS = 10.0


class AccountMoving(Exception):
    """The shard is copying the account elsewhere: wait, then follow it."""


class AccountNotHere(Exception):
    """The shard holds no mailbox of the account: the placement was stale."""


def _insert_sql(table: sa.Table) -> tuple[str, tuple[str, ...]]:
    names = tuple(c.name for c in table.columns)
    columns = ", ".join(f'"{n}"' for n in names)
    values = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    return f"INSERT INTO {table.name} ({columns}) VALUES ({values})", names


_INSERT_MESSAGE = _insert_sql(messages)
_INSERT_ATTACHMENT = _insert_sql(message_attachments)
_INSERT_DELIVERY = _insert_sql(deliveries)
_INSERT_UPLOAD = _insert_sql(uploads)
_SUMMARY = (
    "SELECT "
    + ", ".join(f'"{c.name}"' for c in SUMMARY_COLUMNS)
    + " FROM messages WHERE account_id = $1 AND id = $2"
)


async def _insert(
    conn: asyncpg.Connection, sql: tuple[str, tuple[str, ...]], rows: Iterable[dict[str, Any]]
) -> None:
    statement, names = sql
    values = [tuple(row[n] for n in names) for row in rows]
    if values:
        await conn.executemany(statement, values)


async def lock_accounts(
    conn: asyncpg.Connection, account_ids: Iterable[int], *, strict: bool
) -> None:
    """Locks the accounts' ``mailbox_state`` rows until the transaction ends.
    Raises ``AccountMoving`` when one is being moved away, and, when
    ``strict``, ``AccountNotHere`` when one has no mailbox on this shard."""
    wanted = sorted(set(account_ids))
    rows = await conn.fetch(
        "SELECT account_id, moving_to FROM mailbox_state"
        " WHERE account_id = ANY($1::bigint[]) ORDER BY account_id FOR UPDATE",
        wanted,
    )
    if any(r[1] is not None for r in rows):
        raise AccountMoving([r[0] for r in rows if r[1] is not None])
    if strict and len(rows) < len(wanted):
        found = {r[0] for r in rows}
        raise AccountNotHere([a for a in wanted if a not in found])


async def _summary(
    conn: asyncpg.Connection, account_id: int, message_id: int
) -> MessageSummary | None:
    row = await conn.fetchrow(_SUMMARY, account_id, message_id)
    return summary_from_row(row) if row is not None else None


def _state(summary: MessageSummary) -> dict[str, object]:
    return message_state(
        summary.id, summary.folder_id, summary.thread_id, summary.is_read, summary.is_flagged
    )


# -- write steps: functions of the connection, in the shard's transaction ------


async def assign_threads(
    conn: asyncpg.Connection, fresh: Sequence[NewMessage], log: PgChangeLog
) -> list[NewMessage]:
    """``threadkeys`` rules, as SQLite's ``assign_threads_sync``: the new
    messages with their threads; threads they link are merged."""
    stored: dict[tuple[int, str], ThreadKey] = {}
    for account_id, keys in keys_by_account(fresh).items():
        rows = await conn.fetch(
            "SELECT ref, thread_id, seen_at FROM thread_keys"
            " WHERE account_id = $1 AND ref = ANY($2::text[])",
            account_id,
            keys,
        )
        stored.update({(account_id, r[0]): ThreadKey(r[1], r[2]) for r in rows})
    plan = plan_threads(fresh, stored)
    for (account_id, survivor), absorbed in plan.merge_groups().items():
        moved = await conn.fetch(
            "UPDATE messages SET thread_id = $1"
            " WHERE account_id = $2 AND thread_id = ANY($3::bigint[])"
            " RETURNING id, folder_id, is_read, is_flagged",
            survivor,
            account_id,
            absorbed,
        )
        for message_id, folder_id, is_read, is_flagged in moved:
            log.add(
                account_id,
                "message.updated",
                message_state(message_id, folder_id, survivor, is_read, is_flagged),
            )
        await conn.execute(
            "UPDATE thread_keys SET thread_id = $1"
            " WHERE account_id = $2 AND thread_id = ANY($3::bigint[])",
            survivor,
            account_id,
            absorbed,
        )
    if plan.updates:
        await conn.executemany(
            "UPDATE thread_keys SET thread_id = $1, seen_at = $2"
            " WHERE account_id = $3 AND ref = $4",
            [(k.thread_id, k.seen_at, k.account_id, k.ref) for k in plan.updates],
        )
    if plan.inserts:
        await conn.executemany(
            "INSERT INTO thread_keys (account_id, ref, thread_id, seen_at) VALUES ($1, $2, $3, $4)",
            [(k.account_id, k.ref, k.thread_id, k.seen_at) for k in plan.inserts],
        )
    return rethreaded(fresh, plan)


async def store_messages_step(
    conn: asyncpg.Connection, log: PgChangeLog, new: Sequence[NewMessage]
) -> list[int]:
    ids: list[int] = []
    fresh: list[NewMessage] = []
    known: dict[tuple[int, str], int] = {}
    by_account: dict[int, list[str]] = {}
    for m in new:
        by_account.setdefault(m.account_id, []).append(m.ingest_key)
    for account_id, keys in by_account.items():
        rows = await conn.fetch(
            "SELECT ingest_key, id FROM messages"
            " WHERE account_id = $1 AND ingest_key = ANY($2::text[])",
            account_id,
            keys,
        )
        known.update({(account_id, r[0]): int(r[1]) for r in rows})
    for m in new:
        key = (m.account_id, m.ingest_key)
        if key not in known:
            known[key] = m.id
            fresh.append(m)
        ids.append(known[key])
    if not fresh:
        return ids
    fresh = await assign_threads(conn, fresh, log)
    await _insert(conn, _INSERT_MESSAGE, (message_row(m) for m in fresh))
    # Searchable in the same transaction: never stored but unfindable.
    await insert_documents(conn, [document_for(m) for m in fresh])
    await _insert(conn, _INSERT_ATTACHMENT, attachment_rows(fresh))
    await _insert(conn, _INSERT_DELIVERY, delivery_rows(fresh))
    for m in fresh:
        log.add(
            m.account_id,
            "message.new",
            message_state(m.id, m.folder_id, m.thread_id, m.is_read, m.is_flagged),
        )
    for (account_id, folder_id), (total, unread) in folder_counts(fresh).items():
        await log.folder_counts(account_id, folder_id, total, unread)
    return ids


async def update_message_step(
    conn: asyncpg.Connection,
    log: PgChangeLog,
    account_id: int,
    message_id: int,
    patch: MessagePatch,
) -> MessageSummary | None:
    before = await _summary(conn, account_id, message_id)
    if before is None:
        return None
    if patch.folder_id is not None and patch.folder_id != before.folder_id:
        exists = await conn.fetchval(
            "SELECT 1 FROM folders WHERE account_id = $1 AND id = $2", account_id, patch.folder_id
        )
        if exists is None:
            return None
    is_read = before.is_read if patch.is_read is None else patch.is_read
    is_flagged = before.is_flagged if patch.is_flagged is None else patch.is_flagged
    target = before.folder_id if patch.folder_id is None else patch.folder_id
    if (is_read, is_flagged, target) == (before.is_read, before.is_flagged, before.folder_id):
        return before
    await conn.execute(
        "UPDATE messages SET is_read = $1, is_flagged = $2, folder_id = $3"
        " WHERE account_id = $4 AND id = $5",
        is_read,
        is_flagged,
        target,
        account_id,
        message_id,
    )
    after = replace(before, is_read=is_read, is_flagged=is_flagged, folder_id=target)
    change = _state(after)
    if target != before.folder_id:
        change["from_folder_id"] = before.folder_id
    log.add(account_id, "message.updated", change)
    was_unread, now_unread = int(not before.is_read), int(not is_read)
    if target != before.folder_id:
        await log.folder_counts(account_id, before.folder_id, -1, -was_unread)
        await log.folder_counts(account_id, target, 1, now_unread)
    else:
        await log.folder_counts(account_id, target, 0, now_unread - was_unread)
    return after


async def delete_message_step(
    conn: asyncpg.Connection, log: PgChangeLog, account_id: int, message_id: int
) -> bool:
    before = await _summary(conn, account_id, message_id)
    if before is None:
        return False
    await conn.execute(
        "DELETE FROM messages WHERE account_id = $1 AND id = $2", account_id, message_id
    )
    for table in ("message_attachments", "deliveries", "search_documents"):
        await conn.execute(
            f"DELETE FROM {table} WHERE account_id = $1 AND message_id = $2",
            account_id,
            message_id,
        )
    log.add(account_id, "message.deleted", _state(before))
    await log.folder_counts(account_id, before.folder_id, -1, -int(not before.is_read))
    return True


async def create_folder_step(conn: asyncpg.Connection, log: PgChangeLog, folder: Folder) -> None:
    await conn.execute(
        "INSERT INTO folders (account_id, id, name, role, total, unread)"
        " VALUES ($1, $2, $3, $4, 0, 0)",
        folder.account_id,
        folder.id,
        folder.name,
        folder.role,
    )
    log.folder_updated(folder.account_id, folder.id, (folder.name, folder.role, 0, 0))


async def rename_folder_step(
    conn: asyncpg.Connection, log: PgChangeLog, account_id: int, folder_id: int, name: str
) -> None:
    row = await conn.fetchrow(
        "UPDATE folders SET name = $1 WHERE account_id = $2 AND id = $3"
        " RETURNING name, role, total, unread",
        name,
        account_id,
        folder_id,
    )
    if row is not None:
        log.folder_updated(account_id, folder_id, row)


async def delete_folder_step(
    conn: asyncpg.Connection, log: PgChangeLog, account_id: int, folder_id: int, move_to: int
) -> None:
    counts = await conn.fetchrow(
        "SELECT total, unread FROM folders WHERE account_id = $1 AND id = $2",
        account_id,
        folder_id,
    )
    if counts is None or folder_id == move_to:
        return
    moved = await conn.fetch(
        "UPDATE messages SET folder_id = $1 WHERE account_id = $2 AND folder_id = $3"
        " RETURNING id, thread_id, is_read, is_flagged",
        move_to,
        account_id,
        folder_id,
    )
    for message_id, thread_id, is_read, is_flagged in moved:
        change = message_state(message_id, move_to, thread_id, is_read, is_flagged)
        change["from_folder_id"] = folder_id
        log.add(account_id, "message.updated", change)
    await log.folder_counts(account_id, move_to, counts[0], counts[1])
    await conn.execute(
        "DELETE FROM folders WHERE account_id = $1 AND id = $2", account_id, folder_id
    )
    log.add(account_id, "folder.updated", {"id": folder_id, "deleted": True})


async def set_deliveries_step(
    conn: asyncpg.Connection,
    log: PgChangeLog,
    account_id: int,
    message_id: int,
    updates: Sequence[Delivery],
) -> None:
    await conn.executemany(
        "UPDATE deliveries SET status = $1, detail = $2, next_attempt_at = $3,"
        " claimed_until = NULL, claimed_by = NULL"
        " WHERE account_id = $4 AND message_id = $5 AND email = $6",
        [(d.status, d.detail, d.next_attempt_at, account_id, message_id, d.email) for d in updates],
    )
    summary = await _summary(conn, account_id, message_id)
    if summary is not None:
        # The sender sees each recipient's standing on the Sent copy.
        log.add(account_id, "message.updated", {**_state(summary), "delivery": True})


async def claim_deliveries_step(
    conn: asyncpg.Connection,
    account_id: int,
    message_id: int,
    emails: Sequence[str],
    claimant: str,
    now_ms: int,
    until_ms: int,
) -> list[Delivery]:
    """One UPDATE ... RETURNING: the rows it returns are the ones it took."""
    rows = await conn.fetch(
        "UPDATE deliveries SET claimed_until = $1, claimed_by = $2"
        " WHERE account_id = $3 AND message_id = $4 AND email = ANY($5::text[])"
        " AND status = ANY($6::text[])"
        " AND (claimed_until IS NULL OR claimed_until <= $7 OR claimed_by = $2)"
        " RETURNING email, status, detail, next_attempt_at",
        until_ms,
        claimant,
        account_id,
        message_id,
        list(emails),
        list(CLAIMABLE),
        now_ms,
    )
    return [Delivery(r[0], r[1], r[2], r[3]) for r in rows]


class PgMailboxStore(SqlMailboxReads):
    """Every method on the account's shard (``PgCluster``); ``stale_sends``
    on every shard."""

    def __init__(
        self,
        cluster: PgCluster,
        *,
        on_commit: OnCommit | None = None,
        keep_changes: int = 10_000,
    ) -> None:
        self.cluster = cluster
        self.reads = cluster.directory
        self.on_commit = on_commit
        self.keep_changes = keep_changes

    async def open(self) -> None:
        await self.cluster.open()

    async def close(self) -> None:
        await self.cluster.close()

    def _read(self, account_id: int | None, *, stale_ok: bool = False) -> Any:
        return _AccountRead(self.cluster, account_id, stale_ok)

    async def ping(self) -> None:
        for database in self.cluster.databases():
            async with database.read() as session:
                await session.fetch("SELECT 1")

    # -- writes ---------------------------------------------------------------

    async def _run(
        self, shard: str, account_ids: Sequence[int], step: Step[T], *, strict: bool
    ) -> T:
        async with self.cluster.shards[shard].write() as conn:
            await lock_accounts(conn, account_ids, strict=strict)
            log = PgChangeLog(conn, self.keep_changes)
            result = await step(conn, log)
            heads = await log.write()
        if heads and self.on_commit is not None:
            await self.on_commit(heads)
        return result

    async def _route(self, account_id: int, *, fresh: bool) -> str:
        """The account's shard; with ``fresh``, read from the directory and
        raising ``AccountMoving`` while a move of it runs."""
        if not fresh:
            return await self.cluster.shard_name(account_id)
        placement = await self.cluster.placement(account_id)
        if placement is not None and placement.state == "moving":
            raise AccountMoving([account_id])
        return await self.cluster.shard_name(account_id, fresh=True)

    async def _write(self, account_id: int, step: Step[T]) -> T:
        waiting = _MoveWait()
        fresh = False
        while True:
            try:
                shard = await self._route(account_id, fresh=fresh)
                return await self._run(shard, [account_id], step, strict=not fresh)
            except AccountNotHere:
                self.cluster.forget(account_id)
                fresh = True
            except AccountMoving:
                self.cluster.forget(account_id)
                fresh = True
                await waiting.wait()

    async def write_account(self, account_id: int, step: Step[T]) -> T:
        """A write of another role kept beside the mailbox (the Bayes
        statistics, ``pg_bayes.py``) on the account's shard, behind the same
        fence as the mailbox's own: it follows an account that moves."""
        return await self._write(account_id, step)

    async def create_mailbox(self, account_id: int, folders: Sequence[Folder]) -> None:
        batch = list(folders)
        shard = await self.cluster.place(account_id)
        async with self.cluster.shards[shard].write() as conn:
            await conn.execute(
                "INSERT INTO mailbox_state (account_id, modseq, kept_after) VALUES ($1, 0, 0)"
                " ON CONFLICT (account_id) DO NOTHING",
                account_id,
            )
            if batch:
                await conn.executemany(
                    "INSERT INTO folders (account_id, id, name, role, total, unread)"
                    " VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT DO NOTHING",
                    [(f.account_id, f.id, f.name, f.role) for f in batch],
                )

    async def create_folder(self, folder: Folder) -> None:
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> None:
            await create_folder_step(conn, log, folder)

        await self._write(folder.account_id, step)

    async def rename_folder(self, account_id: int, folder_id: int, name: str) -> None:
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> None:
            await rename_folder_step(conn, log, account_id, folder_id, name)

        await self._write(account_id, step)

    async def delete_folder(self, account_id: int, folder_id: int, move_to: int) -> None:
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> None:
            await delete_folder_step(conn, log, account_id, folder_id, move_to)

        await self._write(account_id, step)

    async def store_messages(self, new: Sequence[NewMessage]) -> list[int]:
        if not new:
            return []
        batch = list(new)
        ids: list[int | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        fresh: set[int] = set()
        waiting = _MoveWait()
        while pending:
            groups: dict[str, list[int]] = {}
            again: list[int] = []
            moving = False
            for i in pending:
                account_id = batch[i].account_id
                try:
                    shard = await self._route(account_id, fresh=account_id in fresh)
                except AccountMoving:
                    again.append(i)
                    moving = True
                    continue
                groups.setdefault(shard, []).append(i)
            for shard, indexes in groups.items():
                part = [batch[i] for i in indexes]
                accounts = {m.account_id for m in part}

                async def step(
                    conn: asyncpg.Connection, log: PgChangeLog, part: list[NewMessage] = part
                ) -> list[int]:
                    return await store_messages_step(conn, log, part)

                try:
                    stored = await self._run(
                        shard, sorted(accounts), step, strict=not accounts <= fresh
                    )
                except (AccountNotHere, AccountMoving) as exc:
                    for account_id in accounts:
                        self.cluster.forget(account_id)
                    fresh |= accounts
                    again.extend(indexes)
                    moving = moving or isinstance(exc, AccountMoving)
                    continue
                for i, stored_id in zip(indexes, stored, strict=True):
                    ids[i] = stored_id
            pending = again
            if moving:
                await waiting.wait()
        return [i for i in ids if i is not None]

    async def update_message(
        self, account_id: int, message_id: int, patch: MessagePatch
    ) -> MessageSummary | None:
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> MessageSummary | None:
            return await update_message_step(conn, log, account_id, message_id, patch)

        return await self._write(account_id, step)

    async def delete_message(self, account_id: int, message_id: int) -> bool:
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> bool:
            return await delete_message_step(conn, log, account_id, message_id)

        return await self._write(account_id, step)

    async def set_deliveries(
        self, account_id: int, message_id: int, updates: Sequence[Delivery]
    ) -> None:
        if not updates:
            return
        batch = list(updates)

        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> None:
            await set_deliveries_step(conn, log, account_id, message_id, batch)

        await self._write(account_id, step)

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
        wanted = list(dict.fromkeys(emails))
        if not wanted:
            return []

        # A claim is no mailbox change the user sees: no change-log entry.
        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> list[Delivery]:
            return await claim_deliveries_step(
                conn, account_id, message_id, wanted, claimant, now_ms, until_ms
            )

        return await self._write(account_id, step)

    async def create_upload(self, upload: Upload) -> None:
        row: dict[str, Any] = {
            "account_id": upload.account_id,
            "id": upload.id,
            "filename": upload.filename,
            "content_type": upload.content_type,
            "size": upload.size,
            "blob_hash": upload.blob_hash,
            "created_at": upload.created_at,
        }

        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> None:
            await _insert(conn, _INSERT_UPLOAD, [row])

        await self._write(upload.account_id, step)

    async def stale_sends(self, received_before: int, limit: int) -> list[StaleSend]:
        found: list[StaleSend] = []
        seen: set[tuple[int, int]] = set()
        for database in self.cluster.shard_databases():
            for send in await stale_sends(database, received_before, limit):
                # An account being moved is on two shards for a moment.
                if (send.account_id, send.message_id) not in seen:
                    seen.add((send.account_id, send.message_id))
                    found.append(send)
            if len(found) >= limit:
                break
        return found

    async def blob_references(self, hashes: Sequence[str]) -> set[str]:
        # Every shard, on its primary: a replica's lag could hide a copy
        # just stored, and the sweep frees what is not found. An account
        # being moved is on both shards from its copy until its old rows are
        # deleted, at least the placement cache's lifetime later: shards
        # probed within that time of each other cannot both miss it.
        wanted = list(hashes)
        while True:
            started = time.monotonic()
            found: set[str] = set()
            for database in self.cluster.shard_databases():
                found |= await blob_references(database, wanted)
            if time.monotonic() - started < PLACEMENT_TTL_SECONDS / 2:
                return found


class _MoveWait:
    """A write waiting for its account's move to end: short sleeps, then
    "try later" after ``MOVE_WAIT_SECONDS``."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MOVE_WAIT_SECONDS

    async def wait(self) -> None:
        if time.monotonic() >= self.deadline:
            raise BackendUnavailable("the account is being moved between shards: try again")
        await asyncio.sleep(0.05)


class _AccountRead:
    """``async with``: a read session on the account's shard (its replica
    when ``stale_ok`` and one is configured); ``None``: the directory."""

    __slots__ = ("_account_id", "_cluster", "_inner", "_stale_ok")

    def __init__(self, cluster: PgCluster, account_id: int | None, stale_ok: bool) -> None:
        self._cluster = cluster
        self._account_id = account_id
        self._stale_ok = stale_ok
        self._inner: Any = None

    async def __aenter__(self) -> Any:
        if self._account_id is None:
            database = self._cluster.directory
        else:
            database = await self._cluster.shard(self._account_id)
        self._inner = database.read(stale_ok=self._stale_ok)
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)
