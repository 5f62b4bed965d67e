"""``MailboxStore`` on SQLite: reads through SQLAlchemy (``sql/mailbox_reads.py``,
shared with every SQL engine), every write on the database's writer thread on a
plain sqlite3 connection (one write path, decision 0010).

A write is a plain function of the connection and the transaction's
``ChangeLog``: it changes rows and counters and records each change; the log
numbers them in the same transaction. Writes of concurrent callers commit
together (group commit): one fsync for a batch of deliveries, and no SQLAlchemy
statement built per message on the hot path. After the commit the store calls
``on_commit`` with the accounts' new heads, which wakes their watchers through
the event bus.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import sqlalchemy as sa

from mailfleet.search.document import document_for
from mailfleet.storage.embedded.sqlite import SqliteDatabase
from mailfleet.storage.embedded.sqlite_changes import ChangeLog, message_state
from mailfleet.storage.embedded.sqlite_search import SqliteSearchIndex
from mailfleet.storage.embedded.sqlite_threads import assign_threads_sync
from mailfleet.storage.interfaces import (
    Delivery,
    Folder,
    MessagePatch,
    MessageSummary,
    NewMessage,
    Upload,
)
from mailfleet.storage.sql.mailbox_reads import SqlMailboxReads
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

T = TypeVar("T")
OnCommit = Callable[[Mapping[int, int]], Awaitable[None]]


def _insert_sql(table: sa.Table) -> str:
    """INSERT with named parameters: the rows are the dicts ``sql/rows.py`` builds."""
    names = [c.name for c in table.columns]
    columns = ", ".join(f'"{n}"' for n in names)
    values = ", ".join(f":{n}" for n in names)
    return f"INSERT INTO {table.name} ({columns}) VALUES ({values})"


_INSERT_MESSAGE = _insert_sql(messages)
_INSERT_ATTACHMENT = _insert_sql(message_attachments)
_INSERT_DELIVERY = _insert_sql(deliveries)
_INSERT_UPLOAD = _insert_sql(uploads)
_SUMMARY = "SELECT " + ", ".join(f'"{c.name}"' for c in SUMMARY_COLUMNS) + " FROM messages"


def _summary(conn: sqlite3.Connection, account_id: int, message_id: int) -> MessageSummary | None:
    cursor = conn.execute(f"{_SUMMARY} WHERE account_id = ? AND id = ?", (account_id, message_id))
    cursor.row_factory = sqlite3.Row
    row = cursor.fetchone()
    return summary_from_row(row) if row is not None else None


def _state(summary: MessageSummary) -> dict[str, object]:
    return message_state(
        summary.id, summary.folder_id, summary.thread_id, summary.is_read, summary.is_flagged
    )


# -- writes: plain functions of the connection, in the writer's transaction ----


def create_mailbox_sync(
    conn: sqlite3.Connection, account_id: int, folders: Sequence[Folder]
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO mailbox_state (account_id, modseq, kept_after) VALUES (?, 0, 0)",
        (account_id,),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO folders (account_id, id, name, role, total, unread)"
        " VALUES (?, ?, ?, ?, 0, 0)",
        [(f.account_id, f.id, f.name, f.role) for f in folders],
    )


def store_messages_sync(
    conn: sqlite3.Connection,
    log: ChangeLog,
    new: Sequence[NewMessage],
    search: SqliteSearchIndex | None,
) -> list[int]:
    """A known ``(account_id, ingest_key)`` returns the stored id and adds
    nothing; folder counters and the change log move with the rows."""
    ids: list[int] = []
    fresh: list[NewMessage] = []
    known: dict[tuple[int, str], int] = {}
    for m in new:
        key = (m.account_id, m.ingest_key)
        if key not in known:
            row = conn.execute(
                "SELECT id FROM messages WHERE account_id = ? AND ingest_key = ?", key
            ).fetchone()
            if row is None:
                known[key] = m.id
                fresh.append(m)
            else:
                known[key] = int(row[0])
        ids.append(known[key])
    if not fresh:
        return ids
    fresh = assign_threads_sync(conn, fresh, log)  # threadkeys rules
    conn.executemany(_INSERT_MESSAGE, [message_row(m) for m in fresh])
    if search is not None:
        # Searchable in the same transaction: never stored but unfindable.
        search.insert_sync(conn, [document_for(m) for m in fresh])
    conn.executemany(_INSERT_ATTACHMENT, attachment_rows(fresh))
    conn.executemany(_INSERT_DELIVERY, delivery_rows(fresh))
    for m in fresh:
        log.add(
            m.account_id,
            "message.new",
            message_state(m.id, m.folder_id, m.thread_id, m.is_read, m.is_flagged),
        )
    for (account_id, folder_id), (total, unread) in folder_counts(fresh).items():
        log.folder_counts(account_id, folder_id, total, unread)
    return ids


def update_message_sync(
    conn: sqlite3.Connection, log: ChangeLog, account_id: int, message_id: int, patch: MessagePatch
) -> MessageSummary | None:
    before = _summary(conn, account_id, message_id)
    if before is None:
        return None
    if patch.folder_id is not None and patch.folder_id != before.folder_id:
        exists = conn.execute(
            "SELECT 1 FROM folders WHERE account_id = ? AND id = ?", (account_id, patch.folder_id)
        ).fetchone()
        if exists is None:
            return None
    is_read = before.is_read if patch.is_read is None else patch.is_read
    is_flagged = before.is_flagged if patch.is_flagged is None else patch.is_flagged
    target = before.folder_id if patch.folder_id is None else patch.folder_id
    if (is_read, is_flagged, target) == (before.is_read, before.is_flagged, before.folder_id):
        return before
    conn.execute(
        "UPDATE messages SET is_read = ?, is_flagged = ?, folder_id = ?"
        " WHERE account_id = ? AND id = ?",
        (is_read, is_flagged, target, account_id, message_id),
    )
    after = replace(before, is_read=is_read, is_flagged=is_flagged, folder_id=target)
    change = _state(after)
    if target != before.folder_id:
        change["from_folder_id"] = before.folder_id
    log.add(account_id, "message.updated", change)
    was_unread, now_unread = int(not before.is_read), int(not is_read)
    if target != before.folder_id:
        log.folder_counts(account_id, before.folder_id, -1, -was_unread)
        log.folder_counts(account_id, target, 1, now_unread)
    else:
        log.folder_counts(account_id, target, 0, now_unread - was_unread)
    return after


def delete_message_sync(
    conn: sqlite3.Connection, log: ChangeLog, account_id: int, message_id: int
) -> bool:
    before = _summary(conn, account_id, message_id)
    if before is None:
        return False
    key = (account_id, message_id)
    conn.execute("DELETE FROM messages WHERE account_id = ? AND id = ?", key)
    conn.execute("DELETE FROM message_attachments WHERE account_id = ? AND message_id = ?", key)
    conn.execute("DELETE FROM deliveries WHERE account_id = ? AND message_id = ?", key)
    log.add(account_id, "message.deleted", _state(before))
    log.folder_counts(account_id, before.folder_id, -1, -int(not before.is_read))
    return True


def create_folder_sync(conn: sqlite3.Connection, log: ChangeLog, folder: Folder) -> None:
    conn.execute(
        "INSERT INTO folders (account_id, id, name, role, total, unread) VALUES (?, ?, ?, ?, 0, 0)",
        (folder.account_id, folder.id, folder.name, folder.role),
    )
    log.folder_updated(folder.account_id, folder.id, (folder.name, folder.role, 0, 0))


def rename_folder_sync(
    conn: sqlite3.Connection, log: ChangeLog, account_id: int, folder_id: int, name: str
) -> None:
    row = conn.execute(
        "UPDATE folders SET name = ? WHERE account_id = ? AND id = ?"
        " RETURNING name, role, total, unread",
        (name, account_id, folder_id),
    ).fetchone()
    if row is not None:
        log.folder_updated(account_id, folder_id, row)


def delete_folder_sync(
    conn: sqlite3.Connection, log: ChangeLog, account_id: int, folder_id: int, move_to: int
) -> None:
    counts = conn.execute(
        "SELECT total, unread FROM folders WHERE account_id = ? AND id = ?",
        (account_id, folder_id),
    ).fetchone()
    if counts is None or folder_id == move_to:
        return
    moved = conn.execute(
        "UPDATE messages SET folder_id = ? WHERE account_id = ? AND folder_id = ?"
        " RETURNING id, thread_id, is_read, is_flagged",
        (move_to, account_id, folder_id),
    ).fetchall()
    for message_id, thread_id, is_read, is_flagged in moved:
        change = message_state(message_id, move_to, thread_id, is_read, is_flagged)
        change["from_folder_id"] = folder_id
        log.add(account_id, "message.updated", change)
    log.folder_counts(account_id, move_to, counts[0], counts[1])
    conn.execute("DELETE FROM folders WHERE account_id = ? AND id = ?", (account_id, folder_id))
    log.add(account_id, "folder.updated", {"id": folder_id, "deleted": True})


def set_deliveries_sync(
    conn: sqlite3.Connection,
    log: ChangeLog,
    account_id: int,
    message_id: int,
    updates: Sequence[Delivery],
) -> None:
    conn.executemany(
        "UPDATE deliveries SET status = ?, detail = ?, next_attempt_at = ?,"
        " claimed_until = NULL, claimed_by = NULL"
        " WHERE account_id = ? AND message_id = ? AND email = ?",
        [(d.status, d.detail, d.next_attempt_at, account_id, message_id, d.email) for d in updates],
    )
    summary = _summary(conn, account_id, message_id)
    if summary is not None:
        # The sender sees each recipient's standing on the Sent copy.
        log.add(account_id, "message.updated", {**_state(summary), "delivery": True})


def claim_deliveries_sync(
    conn: sqlite3.Connection,
    account_id: int,
    message_id: int,
    emails: Sequence[str],
    claimant: str,
    now_ms: int,
    until_ms: int,
) -> list[Delivery]:
    """One UPDATE ... RETURNING in the writer's transaction: the rows it
    returns are the ones it took."""
    marks = ", ".join("?" for _ in emails)
    statuses = ", ".join("?" for _ in CLAIMABLE)
    rows = conn.execute(
        "UPDATE deliveries SET claimed_until = ?, claimed_by = ?"
        f" WHERE account_id = ? AND message_id = ? AND email IN ({marks})"
        f" AND status IN ({statuses})"
        " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)"
        " RETURNING email, status, detail, next_attempt_at",
        (until_ms, claimant, account_id, message_id, *emails, *CLAIMABLE, now_ms, claimant),
    ).fetchall()
    return [Delivery(r[0], r[1], r[2], r[3]) for r in rows]


class SqliteMailboxStore(SqlMailboxReads):
    """Reads on the database's reader (on the awaiting thread), writes on its
    writer thread.

    ``search``: the search index filled in the same database (and written in
    the same transaction as the messages) when the factory says so."""

    def __init__(
        self,
        database: SqliteDatabase,
        *,
        search: SqliteSearchIndex | None = None,
        on_commit: OnCommit | None = None,
        keep_changes: int = 10_000,
    ) -> None:
        self.database = database
        self.reads = database.reader
        self.search = search
        self.on_commit = on_commit
        self.keep_changes = keep_changes

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def _write(self, step: Callable[[sqlite3.Connection, ChangeLog], T]) -> T:
        keep = self.keep_changes

        def run(conn: sqlite3.Connection) -> tuple[T, dict[int, int]]:
            log = ChangeLog(conn, keep)
            result = step(conn, log)
            return result, log.write()

        result, heads = await self.database.writer.run(run)
        if heads and self.on_commit is not None:
            await self.on_commit(heads)
        return result

    async def create_mailbox(self, account_id: int, folders: Sequence[Folder]) -> None:
        batch = list(folders)
        await self.database.writer.run(lambda conn: create_mailbox_sync(conn, account_id, batch))

    async def create_folder(self, folder: Folder) -> None:
        await self._write(lambda conn, log: create_folder_sync(conn, log, folder))

    async def rename_folder(self, account_id: int, folder_id: int, name: str) -> None:
        await self._write(
            lambda conn, log: rename_folder_sync(conn, log, account_id, folder_id, name)
        )

    async def delete_folder(self, account_id: int, folder_id: int, move_to: int) -> None:
        await self._write(
            lambda conn, log: delete_folder_sync(conn, log, account_id, folder_id, move_to)
        )

    async def store_messages(self, new: Sequence[NewMessage]) -> list[int]:
        if not new:
            return []
        batch = list(new)
        search = self.search
        return await self._write(lambda conn, log: store_messages_sync(conn, log, batch, search))

    async def update_message(
        self, account_id: int, message_id: int, patch: MessagePatch
    ) -> MessageSummary | None:
        return await self._write(
            lambda conn, log: update_message_sync(conn, log, account_id, message_id, patch)
        )

    async def delete_message(self, account_id: int, message_id: int) -> bool:
        return await self._write(
            lambda conn, log: delete_message_sync(conn, log, account_id, message_id)
        )

    async def set_deliveries(
        self, account_id: int, message_id: int, updates: Sequence[Delivery]
    ) -> None:
        if not updates:
            return
        batch = list(updates)
        # worker-out writes one per delivery: through the writer thread,
        # concurrent deliveries share a commit.
        await self._write(
            lambda conn, log: set_deliveries_sync(conn, log, account_id, message_id, batch)
        )

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
        return await self.database.writer.run(
            lambda conn: claim_deliveries_sync(
                conn, account_id, message_id, wanted, claimant, now_ms, until_ms
            )
        )

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
        await self.database.writer.run(lambda conn: conn.execute(_INSERT_UPLOAD, row))
