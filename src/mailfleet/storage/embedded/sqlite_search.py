"""``SearchIndex`` on SQLite FTS5 (the ``search_index`` table of migration 0003),
in the metadata database: ``SqliteMailboxStore.store_messages`` writes a new
message's document in the same transaction as its row (``insert_sync``).

A query tree (``mailfleet.search.query``) becomes, where it can, one FTS5
MATCH expression scoped by the account's owner token and walked in rowid
(= message id = time) order from the newest, joined to ``messages`` for the
folder, flag and date conditions and for the summary: the engine stops after
``limit`` rows. Parts FTS5 cannot express (a filter inside OR, a negation
alone) become ``id IN (SELECT rowid ... MATCH ...)`` conditions on a scan of
the account's messages by id, newest first.

Entries of messages deleted for good stay in the contentless index (SQLite
3.40 cannot delete from it without the original text); the join with
``messages`` drops them from every answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from mailfleet.search.query import And, Filter, Node, Not, Or, Text
from mailfleet.storage.embedded.sqlite_reads import DIALECT
from mailfleet.storage.interfaces import MessageSummary, SearchDocument
from mailfleet.storage.sql.query import Query, one_off
from mailfleet.storage.sql.rows import SUMMARY_COLUMNS, summary_from_row
from mailfleet.storage.sql.schema import messages
from mailfleet.storage.sql.search import filter_condition

if TYPE_CHECKING:
    from mailfleet.storage.embedded.sqlite import SqliteDatabase

search_index = sa.table("search_index", sa.column("rowid", sa.BigInteger))
_MATCH: sa.ColumnClause[Any] = sa.literal_column("search_index")
_PING = Query(sa.select(search_index.c.rowid).limit(0))
COLUMNS = ("owner", "subject", "sender", "recipients", "body", "attachments")

INSERT_DOCUMENT = (
    "INSERT INTO search_index (rowid, owner, subject, sender, recipients, body, attachments)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def owner_token(account_id: int) -> str:
    """The token naming the account in the ``owner`` column: every query is
    scoped by it inside the index."""
    return f"a{account_id}"


def document_row(d: SearchDocument) -> tuple[object, ...]:
    return (
        d.message_id,
        owner_token(d.account_id),
        d.subject,
        d.sender,
        d.recipients,
        d.body,
        d.attachments,
    )


def insert_documents(conn: sqlite3.Connection, documents: Sequence[SearchDocument]) -> None:
    conn.executemany(INSERT_DOCUMENT, [document_row(d) for d in documents])


def _phrase(node: Text) -> str:
    # Tokens are letters and digits only (mailfleet.search.tokens): nothing
    # in them can break out of the quotes.
    return "{" + " ".join(node.fields) + '} : "' + " ".join(node.words) + '"'


def _positive_fts(node: Node) -> str | None:
    """An FTS5 expression for ``node`` when it is pure text with at least one
    positive term in every branch (FTS5's NOT is binary: ``a NOT b``)."""
    if isinstance(node, Text):
        return _phrase(node)
    if isinstance(node, Or):
        parts = [_positive_fts(n) for n in node.nodes]
        if any(p is None for p in parts):
            return None
        return "(" + " OR ".join(f"({p})" for p in parts) + ")"
    if isinstance(node, And):
        positive: list[str] = []
        negative: list[str] = []
        for child in node.nodes:
            if isinstance(child, Not):
                inner = _positive_fts(child.node)
                if inner is None:
                    return None
                negative.append(inner)
            else:
                part = _positive_fts(child)
                if part is None:
                    return None
                positive.append(part)
        if not positive:
            return None
        expression = "(" + " AND ".join(f"({p})" for p in positive) + ")"
        for part in negative:
            expression = f"({expression} NOT ({part}))"
        return expression
    return None


def _scoped(owner: str, expression: str) -> str:
    return f'owner : "{owner}" AND {expression}'


class SqlCompiler:
    def __init__(self, owner: str, folders: Mapping[str, frozenset[int]]) -> None:
        self.owner = owner
        self.folders = folders

    def text_ids(self, expression: str) -> ColumnElement[bool]:
        ids = sa.select(search_index.c.rowid).where(
            _MATCH.op("MATCH")(_scoped(self.owner, expression))
        )
        return messages.c.id.in_(ids)

    def condition(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Text):
            return self.text_ids(_phrase(node))
        if isinstance(node, Not):
            return sa.not_(self.condition(node.node))
        if isinstance(node, And):
            return sa.and_(*(self.condition(n) for n in node.nodes))
        if isinstance(node, Or):
            fts = _positive_fts(node)
            if fts is not None:
                return self.text_ids(fts)
            return sa.or_(*(self.condition(n) for n in node.nodes))
        return self.filter(node)

    def filter(self, node: Filter) -> ColumnElement[bool]:
        return filter_condition(node, self.folders)


def search_statement(
    account_id: int,
    query: Node,
    *,
    owner: str,
    folders: Mapping[str, frozenset[int]],
    columns: Sequence[sa.ColumnElement[Any]],
    limit: int,
    before_id: int | None,
) -> sa.Select[Any]:
    compiler = SqlCompiler(owner, folders)
    children = list(query.nodes) if isinstance(query, And) else [query]
    text_parts = [c for c in children if _positive_fts(c.node if isinstance(c, Not) else c)]
    if any(not isinstance(c, Not) for c in text_parts):
        fts = _positive_fts(And(tuple(text_parts)) if len(text_parts) > 1 else text_parts[0])
        assert fts is not None
        rest = [compiler.condition(c) for c in children if c not in text_parts]
        statement = (
            sa.select(*columns)
            .select_from(
                search_index.join(
                    messages,
                    sa.and_(
                        messages.c.account_id == account_id,
                        messages.c.id == search_index.c.rowid,
                    ),
                )
            )
            .where(_MATCH.op("MATCH")(_scoped(owner, fts)), *rest)
            .order_by(search_index.c.rowid.desc())
        )
        if before_id is not None:
            statement = statement.where(search_index.c.rowid < before_id)
        return statement.limit(limit)
    statement = (
        sa.select(*columns)
        .where(messages.c.account_id == account_id, compiler.condition(query))
        .order_by(messages.c.id.desc())
    )
    if before_id is not None:
        statement = statement.where(messages.c.id < before_id)
    return statement.limit(limit)


class SqliteSearchIndex:
    """Reads on the database's reader engine; ``index`` and ``clear`` on its
    writer thread."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def ping(self) -> None:
        async with self.database.reader.read() as session:
            await session.first(_PING)

    def insert_sync(self, conn: sqlite3.Connection, documents: Sequence[SearchDocument]) -> None:
        """In the caller's transaction (``store_messages``)."""
        insert_documents(conn, documents)

    async def search(
        self,
        account_id: int,
        query: Node,
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
        sql, args = one_off(statement, DIALECT)
        # Milliseconds of FTS work on a large mailbox: on a reader thread,
        # where SQLite lets the event loop go on meanwhile.
        rows = await self.database.reader.run_in_thread(
            lambda conn: conn.execute(sql, args).fetchall()
        )
        return [summary_from_row(row) for row in rows]

    async def index(self, documents: Sequence[SearchDocument]) -> int:
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

        return await self.database.writer.run(add)

    async def clear(self) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO search_index (search_index) VALUES ('delete-all')")

        await self.database.writer.run(clear)
