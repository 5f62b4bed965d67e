"""``SearchIndex`` on PostgreSQL full text, on the account's shard, over our
own tokens (``search/tokens.py``), so both profiles find the same mail (CJK
character pairs included): decision 0016.

A message's document is one ``tsvector`` in ``search_documents`` (migration
0003), built here rather than by a PostgreSQL text-search configuration,
which would cut words its own way: every token of a field becomes the
lexeme ``<field>:<token>`` (``s`` subject, ``f`` sender, ``r`` recipients,
``b`` body, ``a`` attachment names) at its position in that field, plus one
``o:<account id>`` lexeme naming the owner. A query word in a field is that
lexeme; a phrase is ``<->`` (adjacent positions) within one field, so a
phrase never runs across two fields. Every text match is ANDed with the
owner lexeme, so the GIN index answers inside one account.

The document is written by ``PgMailboxStore.store_messages`` in the
transaction that stores the message, and deleted with it. Folder, flag and
date operators are conditions on the live ``messages`` rows
(``storage/sql/search.py``), as on SQLite. Newest first: by message id (our
ids are time-ordered). ``PgSearchIndex.search`` walks the account's newest
messages checking each document (common words fill a page at once), walks on
while the matches seen promise a page soon, and asks the GIN index for the
rest (rare words: few matches, then sorted). The planner alone cannot tell a
word that no message holds from a common one.

Limits of tsvector, both far past what people type: positions stop at
16,383 (a phrase is matched exactly in a field's first 16,383 words; a
single word anywhere), and a lexeme keeps its first 256 positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.sql.elements import ColumnElement

from mailfleet.search.query import And, Node, Not, Or, Text
from mailfleet.storage.distributed.pg_database import DIALECT
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.interfaces import MessageSummary, SearchDocument
from mailfleet.storage.sql.query import one_off
from mailfleet.storage.sql.rows import SUMMARY_COLUMNS, summary_from_row
from mailfleet.storage.sql.schema import messages
from mailfleet.storage.sql.search import filter_condition

search_documents = sa.table(
    "search_documents",
    sa.column("account_id", sa.BigInteger),
    sa.column("message_id", sa.BigInteger),
    sa.column("document", TSVECTOR),
)
FIELD_PREFIXES = {"subject": "s", "sender": "f", "recipients": "r", "body": "b", "attachments": "a"}
MAX_POSITION = 16_383
MAX_POSITIONS = 256
_INSERT = (
    "INSERT INTO search_documents (account_id, message_id, document)"
    " VALUES ($1, $2, $3::text::tsvector)"
)
_INSERT_MISSING = (
    "INSERT INTO search_documents (account_id, message_id, document)"
    " SELECT a, m, d::tsvector FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS t(a, m, d)"
    " ON CONFLICT (account_id, message_id) DO NOTHING"
)


def owner_lexeme(account_id: int) -> str:
    return f"o:{account_id}"


def document_vector(document: SearchDocument) -> str:
    """The document as a ``tsvector`` literal. Tokens are letters and digits
    only (``search/tokens.py``): nothing in them needs quoting inside the
    quotes."""
    positions: dict[str, list[int]] = {}
    for field, prefix in FIELD_PREFIXES.items():
        text: str = getattr(document, field)
        for position, token in enumerate(text.split(), 1):
            kept = positions.setdefault(f"{prefix}:{token}", [])
            position = min(position, MAX_POSITION)
            if len(kept) < MAX_POSITIONS and (not kept or kept[-1] != position):
                kept.append(position)
    parts = [f"'{owner_lexeme(document.account_id)}'"]
    parts.extend(f"'{lexeme}':{','.join(map(str, kept))}" for lexeme, kept in positions.items())
    return " ".join(parts)


async def insert_documents(conn: asyncpg.Connection, documents: Sequence[SearchDocument]) -> None:
    """In the caller's transaction (``store_messages``)."""
    if documents:
        await conn.executemany(
            _INSERT, [(d.account_id, d.message_id, document_vector(d)) for d in documents]
        )


def _text_query(node: Text) -> str:
    alternatives = []
    for field in node.fields:
        prefix = FIELD_PREFIXES[field]
        alternatives.append(" <-> ".join(f"'{prefix}:{word}'" for word in node.words))
    return "(" + " | ".join(f"({a})" for a in alternatives) + ")"


def text_query(node: Node) -> str | None:
    """A ``tsquery`` for ``node`` when it is text only (words, phrases, and
    their AND, OR and NOT); None when it holds a filter."""
    if isinstance(node, Text):
        return _text_query(node)
    if isinstance(node, Not):
        inner = text_query(node.node)
        return None if inner is None else f"!{inner}"
    if isinstance(node, And | Or):
        parts = [text_query(n) for n in node.nodes]
        if any(p is None for p in parts):
            return None
        joiner = " & " if isinstance(node, And) else " | "
        return "(" + joiner.join(f"({p})" for p in parts) + ")"
    return None


def _matches(owner: str, query: str) -> ColumnElement[bool]:
    scoped = f"'{owner}' & {query}"
    return search_documents.c.document.bool_op("@@")(
        sa.cast(sa.bindparam(None, scoped, type_=sa.Text), TSQUERY)
    )


class _Compiler:
    def __init__(self, owner: str, folders: Mapping[str, frozenset[int]]) -> None:
        self.owner = owner
        self.folders = folders

    def condition(self, node: Node) -> ColumnElement[bool]:
        query = text_query(node)
        if query is not None:
            return _matches(self.owner, query)
        if isinstance(node, Not):
            return sa.not_(self.condition(node.node))
        if isinstance(node, And):
            # The text parts as one tsquery: one probe of the GIN index.
            texts = [q for q in (text_query(n) for n in node.nodes) if q is not None]
            rest = [self.condition(n) for n in node.nodes if text_query(n) is None]
            if texts:
                rest.insert(0, _matches(self.owner, " & ".join(f"({q})" for q in texts)))
            return sa.and_(*rest)
        if isinstance(node, Or):
            return sa.or_(*(self.condition(n) for n in node.nodes))
        assert not isinstance(node, Text)  # text is always a tsquery
        return filter_condition(node, self.folders)


# Newest first, a search first walks this many of the account's newest
# messages, checking each one's document (about 1 µs a row): a word that is
# common in recent mail fills a page there at once. Whatever that walk leaves
# unfilled is asked of the GIN index instead, restricted to older mail. A
# single statement leaves the choice to the planner, which cannot tell a word
# no message holds from a common one: it walked all 1,000,000 messages of an
# account for a word that matched none (1.1 s).
RECENT_WALK = 2_000
# The longest walk on, when the matches of the first stretch say a page will
# fill within it (20,000 rows: about 20 ms).
MAX_WALK = 20_000
_RECENT_BOUND = (
    "SELECT id FROM messages WHERE account_id = $1 AND id < $2 ORDER BY id DESC OFFSET $3 LIMIT 1"
)


def required_text(node: Node) -> str | None:
    """The text that every match must contain, as a ``tsquery`` (what the
    GIN index can find on its own), or None when no text is required."""
    query = text_query(node)
    if query is not None:
        return query
    if isinstance(node, And):
        texts = [q for q in (text_query(n) for n in node.nodes) if q is not None]
        if texts:
            return " & ".join(f"({q})" for q in texts)
    return None


def search_statement(
    account_id: int,
    query: Node,
    *,
    folders: Mapping[str, frozenset[int]],
    limit: int,
    before_id: int | None,
    from_id: int | None = None,
    by_index: bool = False,
) -> sa.Select[Any]:
    """Matches newest first, below ``before_id`` and from ``from_id`` on.
    ``by_index``: the candidates come from the GIN index (the query's
    required text), never from walking the account's messages."""
    owner = owner_lexeme(account_id)
    condition = _Compiler(owner, folders).condition(query)
    joined = messages.join(
        search_documents,
        sa.and_(
            search_documents.c.account_id == messages.c.account_id,
            search_documents.c.message_id == messages.c.id,
        ),
    )
    text = required_text(query) if by_index else None
    if text is not None:
        # A materialized CTE with nothing but the tsquery: only the GIN index
        # can answer it, whatever the planner estimates.
        hits = (
            sa.select(search_documents.c.message_id)
            .where(_matches(owner, text))
            .cte("hits")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        joined = joined.join(hits, hits.c.message_id == messages.c.id)
    statement = (
        sa.select(*SUMMARY_COLUMNS)
        .select_from(joined)
        .where(messages.c.account_id == account_id, condition)
        .order_by(messages.c.id.desc())
    )
    if before_id is not None:
        statement = statement.where(messages.c.id < before_id)
    if from_id is not None:
        statement = statement.where(messages.c.id >= from_id)
    return statement.limit(limit)


class PgSearchIndex:
    """Searches on the account's shard (its replica when configured: a
    search may be slightly stale); ``index`` and ``clear`` on the primaries."""

    def __init__(self, cluster: PgCluster, *, recent_walk: int = RECENT_WALK) -> None:
        self.cluster = cluster
        self.recent_walk = recent_walk

    async def open(self) -> None:
        await self.cluster.open()

    async def close(self) -> None:
        await self.cluster.close()

    async def ping(self) -> None:
        for database in self.cluster.shard_databases():
            async with database.read(stale_ok=True) as session:
                await session.fetch("SELECT 1 FROM search_documents LIMIT 0")

    async def search(
        self,
        account_id: int,
        query: Node,
        *,
        folders: Mapping[str, frozenset[int]],
        limit: int,
        before_id: int | None,
    ) -> list[MessageSummary]:
        database = await self.cluster.shard(account_id)
        text = required_text(query)
        rows: list[Any] = []
        async with database.read(stale_ok=True) as session:

            async def matches(**bounds: Any) -> None:
                statement = search_statement(
                    account_id, query, folders=folders, limit=limit - len(rows), **bounds
                )
                sql, args = one_off(statement, DIALECT)
                rows.extend(await session.fetch(sql, *args))

            upper, walk, walked = before_id, self.recent_walk, 0
            while True:
                # The oldest message of this stretch of the walk; None: the
                # stretch reaches the account's oldest message.
                found = await session.fetch(_RECENT_BOUND, account_id, upper or 2**63 - 1, walk - 1)
                bound: int | None = found[0][0] if found else None
                if bound is None or text is None:
                    # The rest is short, or a query of filters only, which
                    # no text index can narrow: walk it.
                    await matches(before_id=upper)
                    break
                await matches(before_id=upper, from_id=bound)
                walked += walk
                if len(rows) >= limit:
                    break
                # Walk on while the matches seen so far promise a full page
                # within MAX_WALK more rows; otherwise the index finds the rest.
                needed = (limit - len(rows)) * walked * 1.5 / len(rows) if rows else math.inf
                if needed > MAX_WALK:
                    await matches(before_id=bound, by_index=True)
                    break
                upper, walk = bound, int(needed) + 1
        return [summary_from_row(row) for row in rows]

    async def index(self, documents: Sequence[SearchDocument]) -> int:
        by_shard: dict[str, list[SearchDocument]] = {}
        for document in documents:
            shard = await self.cluster.shard_name(document.account_id)
            by_shard.setdefault(shard, []).append(document)
        added = 0
        for shard, batch in by_shard.items():
            async with self.cluster.shards[shard].write() as conn:
                status = await conn.execute(
                    _INSERT_MISSING,
                    [d.account_id for d in batch],
                    [d.message_id for d in batch],
                    [document_vector(d) for d in batch],
                )
            added += int(status.rsplit(" ", 1)[-1])
        return added

    async def clear(self) -> None:
        for database in self.cluster.shard_databases():
            async with database.write() as conn:
                await conn.execute("TRUNCATE search_documents")
