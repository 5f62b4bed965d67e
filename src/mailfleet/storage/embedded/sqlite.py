"""SQLite engines for the metadata store and the queue: WAL, full fsync on
commit (an acknowledged write survives power loss), one writer connection that
takes the write lock at BEGIN, several readers that never block it.

``SqliteMetadataStore`` is the SQL store with its hot write, ``store_messages``
(every delivered mail), on a plain sqlite3 connection owned by one writer
thread (``SqliteWriter``): the copies of concurrent deliveries commit together
and no SQLAlchemy statement is built per message."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

if TYPE_CHECKING:
    from mailfleet.search.query import Node as SearchNode

from mailfleet.search.document import document_for, owner_token
from mailfleet.storage.embedded.sqlite_search import insert_documents, search_statement
from mailfleet.storage.embedded.sqlite_threads import assign_threads_sync
from mailfleet.storage.embedded.sqlite_writer import SqliteWriter
from mailfleet.storage.interfaces import Delivery, MessageSummary, NewMessage, SearchDocument
from mailfleet.storage.sql.schema import deliveries, folders, message_attachments, messages
from mailfleet.storage.sql.store import (
    CLAIMABLE,
    SUMMARY_COLUMNS,
    SqlMetadataStore,
    attachment_rows,
    delivery_rows,
    folder_counts,
    message_row,
    summary_from_row,
)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative`` or ``sqlite:////absolute`` → a path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url[len("sqlite:///") :])


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver so that SQLAlchemy's BEGIN is the only one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def create_sqlite_engines(path: Path, readers: int = 4) -> tuple[AsyncEngine, AsyncEngine]:
    """(writer, reader) engines on one database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{path}"
    writer = create_async_engine(url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    reader = create_async_engine(
        url, poolclass=AsyncAdaptedQueuePool, pool_size=readers, max_overflow=0
    )
    for engine in (writer, reader):
        event.listen(engine.sync_engine, "connect", _pragmas)

    @event.listens_for(writer.sync_engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Taking the write lock at BEGIN avoids SQLITE_BUSY on lock upgrade
        # when another process (the admin CLI) writes at the same time.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(reader.sync_engine, "begin")
    def _begin_deferred(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return writer, reader


def _insert_sql(table: sa.Table) -> str:
    """INSERT with named parameters: the rows are the dicts the SQL store builds."""
    names = [c.name for c in table.columns]
    columns = ", ".join(f'"{n}"' for n in names)
    values = ", ".join(f":{n}" for n in names)
    return f"INSERT INTO {table.name} ({columns}) VALUES ({values})"


_INSERT_MESSAGE = _insert_sql(messages)
_INSERT_ATTACHMENT = _insert_sql(message_attachments)
_INSERT_DELIVERY = _insert_sql(deliveries)


def store_messages_sync(conn: sqlite3.Connection, new: Sequence[NewMessage]) -> list[int]:
    """``MetadataStore.store_messages`` on a plain connection inside the caller's
    transaction: the same rules as ``storage/sql/store.py``'s version (a known
    ``(account_id, ingest_key)`` returns the stored id and adds nothing;
    folder counters change with the rows)."""
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
    fresh = assign_threads_sync(conn, fresh)  # mailbox/threads.py
    conn.executemany(_INSERT_MESSAGE, [message_row(m) for m in fresh])
    # Searchable in the same transaction: never stored but unfindable.
    insert_documents(conn, [document_for(m) for m in fresh])
    conn.executemany(_INSERT_ATTACHMENT, attachment_rows(fresh))
    conn.executemany(_INSERT_DELIVERY, delivery_rows(fresh))
    conn.executemany(
        f"UPDATE {folders.name} SET total = total + ?, unread = unread + ?"
        " WHERE account_id = ? AND id = ?",
        [(t, u, a, f) for (a, f), (t, u) in folder_counts(fresh).items()],
    )
    return ids


class SqliteMetadataStore(SqlMetadataStore):
    """The SQL metadata store on SQLite, with ``store_messages`` group-committed
    by a writer thread on a plain connection (the other writes are rare and go
    through SQLAlchemy; both take the write lock with ``BEGIN IMMEDIATE``)."""

    def __init__(self, path: Path) -> None:
        writer, reader = create_sqlite_engines(path)
        super().__init__(writer, reader)
        self._messages_writer = SqliteWriter(path)

    async def open(self) -> None:
        await super().open()
        self._messages_writer.start()

    async def close(self) -> None:
        await self._messages_writer.stop()
        await super().close()

    async def store_messages(self, new: Sequence[NewMessage]) -> list[int]:
        if not new:
            return []
        batch = list(new)
        return await self._messages_writer.run(lambda conn: store_messages_sync(conn, batch))

    async def set_deliveries(
        self, account_id: int, message_id: int, updates: Sequence[Delivery]
    ) -> None:
        # worker-out writes one per delivery: through the writer thread,
        # concurrent deliveries share a commit with no per-row thread hops.
        rows = [
            (d.status, d.detail, d.next_attempt_at, account_id, message_id, d.email)
            for d in updates
        ]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"UPDATE {deliveries.name} SET status = ?, detail = ?, next_attempt_at = ?,"
                " claimed_until = NULL, claimed_by = NULL"
                " WHERE account_id = ? AND message_id = ? AND email = ?",
                rows,
            )

        await self._messages_writer.run(write)

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
        # Through the writer thread like set_deliveries: one statement, and
        # the writer's transaction makes take-and-mark one atomic step.
        wanted = list(dict.fromkeys(emails))
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        statuses = ", ".join("?" for _ in CLAIMABLE)
        sql = (
            f"UPDATE {deliveries.name} SET claimed_until = ?, claimed_by = ?"
            f" WHERE account_id = ? AND message_id = ? AND email IN ({marks})"
            f" AND status IN ({statuses})"
            " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)"
            " RETURNING email, status, detail, next_attempt_at"
        )
        params = (
            until_ms,
            claimant,
            account_id,
            message_id,
            *wanted,
            *CLAIMABLE,
            now_ms,
            claimant,
        )

        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(sql, params).fetchall()
            return [Delivery(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._messages_writer.run(claim)

    # -- SearchIndex -------------------------------------------------------------

    async def search(
        self,
        account_id: int,
        query: SearchNode,
        *,
        folders: Mapping[str, frozenset[int]],
        limit: int,
        before_id: int | None,
    ) -> list[MessageSummary]:
        statement = search_statement(
            account_id,
            query,
            owner=owner_token(account_id),
            folders=folders,
            columns=SUMMARY_COLUMNS,
            limit=limit,
            before_id=before_id,
        )
        async with self._read() as conn:
            rows = (await conn.execute(statement)).all()
        return [summary_from_row(row) for row in rows]

    async def index_documents(self, documents: Sequence[SearchDocument]) -> int:
        batch = list(documents)

        def add(conn: sqlite3.Connection) -> int:
            added = 0
            for start in range(0, len(batch), 500):
                chunk = batch[start : start + 500]
                marks = ",".join("?" * len(chunk))
                present = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT rowid FROM search_index WHERE rowid IN ({marks})",
                        [d.message_id for d in chunk],
                    )
                }
                missing = [d for d in chunk if d.message_id not in present]
                insert_documents(conn, missing)
                added += len(missing)
            return added

        return await self._messages_writer.run(add)

    async def clear_search_index(self) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO search_index (search_index) VALUES ('delete-all')")

        await self._messages_writer.run(clear)


def sqlite_metadata_store(url: str) -> SqliteMetadataStore:
    return SqliteMetadataStore(sqlite_path(url))
