"""``mailfleet account move``: one account's mailbox from its shard to another
while the service runs (decision 0016).

1. Directory: the placement is marked ``moving`` (to the target). Writers
   that read the placement afresh wait from here on.
2. Old shard: ``mailbox_state.moving_to`` is set. That takes the account's
   row lock, which every write transaction holds, so the move waits for the
   writes in flight; every later write there is refused, and its writer
   waits for the placement to change (up to ``MOVE_WAIT_SECONDS``, then
   "try later": HTTP 503, SMTP 451). Reads go on, on the old shard.
3. Copy: every row of the account, read in one snapshot of the old shard
   (fenced: nothing changes it), written to the new shard in one
   transaction that first removes anything an interrupted move left there.
   With a replica on the new shard, the move waits until it has replayed
   the copy.
4. Directory: the placement names the new shard, ``active``. Waiting
   writers follow it; the change log goes on from the same sequence number.
5. After the placement cache's lifetime (a process may still read the old
   shard until its cached placement expires, and finds the mailbox whole
   there), the account's rows on the old shard are deleted.

Writes wait only through steps 2–4: the time to copy one mailbox. An
interrupted move leaves the account fenced on its old shard; running the
same command again finishes it, and ``--to`` the old shard aborts it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from mailfleet.storage.distributed.pg_database import PgDatabase
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.errors import MoveRefused
from mailfleet.storage.sql.schema import (
    bayes_tokens,
    bayes_totals,
    changes,
    deliveries,
    folders,
    message_attachments,
    messages,
    thread_keys,
    uploads,
)

# Everything of a mailbox but ``mailbox_state`` (copied without its fence)
# and the search documents (tsvector has no binary COPY codec in asyncpg).
# The account's Bayes statistics go with it; what it added to the old shard's
# global statistics stays there (decision 0022).
_PLAIN_TABLES = (
    folders,
    messages,
    message_attachments,
    deliveries,
    uploads,
    thread_keys,
    changes,
    bayes_totals,
    bayes_tokens,
)
ACCOUNT_TABLES = (
    *(t.name for t in _PLAIN_TABLES),
    "search_documents",
    "mailbox_state",
)
REPLICA_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class MoveReport:
    account_id: int
    source: str
    target: str
    messages: int
    writes_paused_seconds: float  # steps 2-4
    seconds: float  # the whole move, the wait before the old copy goes included


def _now_ms() -> int:
    return int(time.time() * 1000)


async def move_account(
    cluster: PgCluster, account_id: int, target: str, *, settle_seconds: float | None = None
) -> MoveReport:
    """Moves the account's mailbox to shard ``target``. ``settle_seconds``:
    how long to wait before the old copy is deleted (default: the placement
    cache's lifetime plus a second)."""
    started = time.monotonic()
    if target not in cluster.shards:
        raise MoveRefused(f"no shard named {target!r} (known: {', '.join(cluster.shards)})")
    placement = await cluster.placement(account_id)
    if placement is None:
        raise MoveRefused(f"account {account_id} has no placement: it has no mailbox")
    source = placement.shard
    if source not in cluster.shards:
        raise MoveRefused(f"the account is on shard {source!r}, which the settings do not name")
    if placement.state == "moving" and placement.moving_to not in (None, target):
        if target == source:
            await _abort(cluster, account_id, source)
            return MoveReport(account_id, source, source, 0, 0.0, time.monotonic() - started)
        raise MoveRefused(
            f"the account is being moved to {placement.moving_to!r}: run that move again"
            f" to finish it, or move it --to {source!r} to abort it"
        )
    if source == target:
        await _remove_leftovers(cluster, account_id, keep=target)
        return MoveReport(account_id, source, target, 0, 0.0, time.monotonic() - started)

    old, new = cluster.shards[source], cluster.shards[target]
    async with cluster.directory.write() as conn:  # 1
        await conn.execute(
            "UPDATE placements SET state = 'moving', moving_to = $2, updated_at = $3"
            " WHERE account_id = $1",
            account_id,
            target,
            _now_ms(),
        )
    paused = time.monotonic()
    async with old.write() as conn:  # 2
        await conn.execute(
            "UPDATE mailbox_state SET moving_to = $2 WHERE account_id = $1", account_id, target
        )
    async with (  # 3
        old.connection() as source_conn,
        new.write() as target_conn,
        source_conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        copied = await _copy(source_conn, target_conn, account_id)
    await new.wait_for_replica(timeout=REPLICA_WAIT_SECONDS)
    async with cluster.directory.write() as conn:  # 4
        await conn.execute(
            "UPDATE placements SET shard = $2, state = 'active', moving_to = NULL,"
            " updated_at = $3 WHERE account_id = $1",
            account_id,
            target,
            _now_ms(),
        )
        await conn.execute(
            "UPDATE shard_loads SET accounts = accounts + 1 WHERE shard = $1", target
        )
        await conn.execute(
            "UPDATE shard_loads SET accounts = accounts - 1 WHERE shard = $1", source
        )
    cluster.forget(account_id)
    paused_for = time.monotonic() - paused
    settle = cluster.placement_ttl + 1.0 if settle_seconds is None else settle_seconds
    await asyncio.sleep(settle)  # 5
    await _delete_account(old, account_id)
    return MoveReport(account_id, source, target, copied, paused_for, time.monotonic() - started)


async def _copy(source: asyncpg.Connection, target: asyncpg.Connection, account_id: int) -> int:
    """Every row of the account from ``source`` to ``target``; answers how
    many messages."""
    for name in ACCOUNT_TABLES:
        await target.execute(f"DELETE FROM {name} WHERE account_id = $1", account_id)
    count = 0
    for table in _PLAIN_TABLES:
        names = [c.name for c in table.columns]
        columns = ", ".join(f'"{n}"' for n in names)
        rows = await source.fetch(
            f"SELECT {columns} FROM {table.name} WHERE account_id = $1", account_id
        )
        if rows:
            await target.copy_records_to_table(table.name, records=rows, columns=names)
        if table is messages:
            count = len(rows)
    documents = await source.fetch(
        "SELECT account_id, message_id, document::text FROM search_documents WHERE account_id = $1",
        account_id,
    )
    if documents:
        await target.executemany(
            "INSERT INTO search_documents (account_id, message_id, document)"
            " VALUES ($1, $2, $3::text::tsvector)",
            [tuple(r) for r in documents],
        )
    state = await source.fetchrow(
        "SELECT modseq, kept_after FROM mailbox_state WHERE account_id = $1", account_id
    )
    if state is not None:
        await target.execute(
            "INSERT INTO mailbox_state (account_id, modseq, kept_after, moving_to)"
            " VALUES ($1, $2, $3, NULL)",
            account_id,
            state[0],
            state[1],
        )
    return count


async def _delete_account(database: PgDatabase, account_id: int) -> None:
    async with database.write() as conn:
        for table in ACCOUNT_TABLES:
            await conn.execute(f"DELETE FROM {table} WHERE account_id = $1", account_id)


async def _abort(cluster: PgCluster, account_id: int, source: str) -> None:
    """Ends an interrupted move where it started: the old shard's copy is
    the account's again."""
    async with cluster.shards[source].write() as conn:
        await conn.execute(
            "UPDATE mailbox_state SET moving_to = NULL WHERE account_id = $1", account_id
        )
    async with cluster.directory.write() as conn:
        await conn.execute(
            "UPDATE placements SET state = 'active', moving_to = NULL, updated_at = $2"
            " WHERE account_id = $1",
            account_id,
            _now_ms(),
        )
    await _remove_leftovers(cluster, account_id, keep=source)


async def _remove_leftovers(cluster: PgCluster, account_id: int, *, keep: str) -> None:
    """Rows of the account on shards other than ``keep`` (an interrupted
    move's copy, or its old copy not yet deleted)."""
    kept = cluster.shards[keep]
    for database in cluster.shard_databases():
        if database is kept:
            continue
        async with database.connection() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM mailbox_state WHERE account_id = $1", account_id
            )
        if found is not None:
            await _delete_account(database, account_id)
