"""Threads in SQL stores (decision 0006): what every engine's thread
assignment shares (the batch's keys, the plan applied to the new messages;
SQLite's assignment is ``storage/embedded/sqlite_threads.py``), and the
queries of thread reads.

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

from mailfleet.storage.interfaces import NewMessage
from mailfleet.storage.sql.schema import messages
from mailfleet.threadkeys import ThreadPlan, keys_of

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


def thread_heads(
    account_id: sa.ColumnElement[Any],
    folder_id: sa.ColumnElement[Any],
    columns: Sequence[sa.ColumnElement[Any]],
    *,
    is_read: sa.ColumnElement[Any] | None,
    keyset: sa.ColumnElement[bool] | None,
    limit: sa.ColumnElement[Any],
) -> sa.Select[Any]:
    """Each thread's newest message in the folder (of those with ``is_read``
    when given), newest first, after the keyset condition (on ``messages``)."""
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
    if keyset is not None:
        query = query.where(keyset)
    return query.order_by(messages.c.received_at.desc(), messages.c.id.desc()).limit(limit)


def thread_counts(
    account_id: sa.ColumnElement[Any], thread_ids: Sequence[sa.ColumnElement[Any]]
) -> sa.Select[Any]:
    """How many messages each thread holds (all folders): index-only."""
    return (
        sa.select(messages.c.thread_id, sa.func.count())
        .where(messages.c.account_id == account_id, messages.c.thread_id.in_(thread_ids))
        .group_by(messages.c.thread_id)
    )
