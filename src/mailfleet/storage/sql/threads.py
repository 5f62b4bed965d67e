"""Thread assignment inside ``store_messages`` (decision 0006), for the SQL
store on any dialect: look up the batch's thread keys, let
``mailbox.threads.plan_threads`` decide, write merges and keys in the same
transaction as the message rows. ``storage/embedded/sqlite_threads.py`` does
the same on SQLite's plain writer connection.

The grouped listing's query lives here too: a thread's row is its newest
message in the folder, found by walking the folder index newest first and
skipping messages that have a newer one of the same thread in the folder (an
index probe on ``ix_messages_thread``), so a page reads about ``limit`` times
the folder's messages per thread, never the whole folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mailfleet.storage.interfaces import ListCursor, NewMessage
from mailfleet.storage.sql.schema import messages, thread_keys
from mailfleet.threadkeys import ThreadKey, ThreadPlan, keys_of, plan_threads

_CHUNK = 500


def keys_by_account(fresh: Sequence[NewMessage]) -> dict[int, list[str]]:
    wanted: dict[int, dict[str, None]] = {}
    for m in fresh:
        wanted.setdefault(m.account_id, {}).update(dict.fromkeys(keys_of(m)))
    return {account_id: list(keys) for account_id, keys in sorted(wanted.items())}


def rethreaded(fresh: Sequence[NewMessage], plan: ThreadPlan) -> list[NewMessage]:
    return [
        m if m.thread_id == t else replace(m, thread_id=t)
        for m, t in zip(fresh, plan.thread_ids, strict=True)
    ]


async def assign_threads(conn: AsyncConnection, fresh: Sequence[NewMessage]) -> list[NewMessage]:
    """The new messages with their threads; other threads they link are
    merged. Runs in the caller's transaction, before the rows are inserted."""
    stored: dict[tuple[int, str], ThreadKey] = {}
    for account_id, keys in keys_by_account(fresh).items():
        if conn.dialect.name == "postgresql":
            # Writers of one account take turns (in account order, so two
            # batches cannot deadlock): two stores of the same new key would
            # otherwise both insert it.
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(account_id)))
        for start in range(0, len(keys), _CHUNK):
            rows = await conn.execute(
                sa.select(thread_keys.c.ref, thread_keys.c.thread_id, thread_keys.c.seen_at).where(
                    thread_keys.c.account_id == account_id,
                    thread_keys.c.ref.in_(keys[start : start + _CHUNK]),
                )
            )
            stored.update({(account_id, r.ref): ThreadKey(r.thread_id, r.seen_at) for r in rows})
    plan = plan_threads(fresh, stored)
    for (account_id, survivor), absorbed in plan.merge_groups().items():
        for table in (messages, thread_keys):
            await conn.execute(
                table.update()
                .where(table.c.account_id == account_id, table.c.thread_id.in_(absorbed))
                .values(thread_id=survivor)
            )
    if plan.updates:
        await conn.execute(
            thread_keys.update()
            .where(
                thread_keys.c.account_id == sa.bindparam("b_account_id"),
                thread_keys.c.ref == sa.bindparam("b_ref"),
            )
            .values(thread_id=sa.bindparam("b_thread_id"), seen_at=sa.bindparam("b_seen_at")),
            [
                dict(
                    b_account_id=k.account_id,
                    b_ref=k.ref,
                    b_thread_id=k.thread_id,
                    b_seen_at=k.seen_at,
                )
                for k in plan.updates
            ],
        )
    if plan.inserts:
        await conn.execute(
            thread_keys.insert(),
            [
                dict(account_id=k.account_id, ref=k.ref, thread_id=k.thread_id, seen_at=k.seen_at)
                for k in plan.inserts
            ],
        )
    return rethreaded(fresh, plan)


def thread_heads(
    account_id: int,
    folder_id: int,
    columns: Sequence[sa.ColumnElement[Any]],
    *,
    is_read: bool | None,
    limit: int,
    after: ListCursor | None,
) -> sa.Select[Any]:
    """Each thread's newest message in the folder (of those with ``is_read``
    when given), newest first, after the keyset cursor."""
    newer = messages.alias("newer")
    conditions = [
        newer.c.account_id == messages.c.account_id,
        newer.c.thread_id == messages.c.thread_id,
        # "+ 0" keeps SQLite's planner off the folder indexes here: they
        # would scan every newer message of the folder, not of the thread.
        newer.c.folder_id + 0 == messages.c.folder_id,
        sa.tuple_(newer.c.received_at, newer.c.id)
        > sa.tuple_(messages.c.received_at, messages.c.id),
    ]
    query = sa.select(*columns).where(
        messages.c.account_id == account_id, messages.c.folder_id == folder_id
    )
    if is_read is not None:
        query = query.where(messages.c.is_read == is_read)
        conditions.append(newer.c.is_read == is_read)
    query = query.where(~sa.select(sa.literal(1)).where(*conditions).exists())
    if after is not None:
        query = query.where(
            sa.tuple_(messages.c.received_at, messages.c.id)
            < sa.tuple_(sa.literal(after.received_at), sa.literal(after.id))
        )
    return query.order_by(messages.c.received_at.desc(), messages.c.id.desc()).limit(limit)


def thread_counts(account_id: int, thread_ids: Sequence[int]) -> sa.Select[Any]:
    """How many messages each thread holds (all folders): index-only."""
    return (
        sa.select(messages.c.thread_id, sa.func.count())
        .where(messages.c.account_id == account_id, messages.c.thread_id.in_(thread_ids))
        .group_by(messages.c.thread_id)
    )
