"""``BayesStore`` on PostgreSQL shards: an account's statistics live on its
shard beside its mailbox, and each shard keeps the global statistics of the
accounts it holds (account 0 on that shard), written in the same
transaction as the account's own and the messages' ``bayes_trained``
marks. Decision 0022 says why not one global table in the directory: every
training of every user would write the same hot rows of one database, in
a second transaction that could not commit with the first.

Training goes through the mailbox store's write path: the account's
``mailbox_state`` row is locked first, so a training follows an account
that moves (``pg_move`` copies the account's rows of both tables) and two
trainings of one account see each other. Changed tokens are written in
token order, so trainings of accounts of one shard, which share its global
rows, always lock them in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from mailfleet.storage.distributed.pg_changes import PgChangeLog
from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
from mailfleet.storage.interfaces import Training
from mailfleet.storage.sql.bayes import (
    GLOBAL_STATS,
    PING,
    SqlBayesReads,
    TrainingPlan,
    plan_training,
)

_UPSERT_TOKEN = (
    "INSERT INTO bayes_tokens AS b (account_id, token, spam, ham)"
    " VALUES ($1, $2, GREATEST($3::bigint, 0), GREATEST($4::bigint, 0))"
    " ON CONFLICT (account_id, token) DO UPDATE"
    " SET spam = GREATEST(b.spam + $3::bigint, 0), ham = GREATEST(b.ham + $4::bigint, 0)"
)
_UPSERT_TOTALS = (
    "INSERT INTO bayes_totals AS b (account_id, spam, ham, accounts)"
    " VALUES ($1, GREATEST($2::bigint, 0), GREATEST($3::bigint, 0), $4)"
    " ON CONFLICT (account_id) DO UPDATE SET spam = GREATEST(b.spam + $2::bigint, 0),"
    " ham = GREATEST(b.ham + $3::bigint, 0), accounts = b.accounts + $4"
)


async def train_step(
    conn: asyncpg.Connection, account_id: int, trainings: Sequence[Training]
) -> list[str | None]:
    rows = await conn.fetch(
        "SELECT id, bayes_trained FROM messages WHERE account_id = $1 AND id = ANY($2::bigint[])",
        account_id,
        list({t.message_id for t in trainings}),
    )
    plan = plan_training({int(r[0]): r[1] for r in rows}, trainings)
    if plan.labels:
        await apply_step(conn, account_id, plan)
    return plan.before


async def apply_step(conn: asyncpg.Connection, account_id: int, plan: TrainingPlan) -> None:
    await conn.executemany(
        "UPDATE messages SET bayes_trained = $1 WHERE account_id = $2 AND id = $3",
        [(label, account_id, message_id) for message_id, label in plan.labels.items()],
    )
    changed = plan.sorted_tokens()
    for owner in (account_id, GLOBAL_STATS):
        await conn.executemany(_UPSERT_TOKEN, [(owner, t, ds, dh) for t, ds, dh in changed])
        # Rows that fell to nothing go: untrained tokens do not pile up.
        await conn.execute(
            "DELETE FROM bayes_tokens WHERE account_id = $1 AND token = ANY($2::text[])"
            " AND spam = 0 AND ham = 0",
            owner,
            [t for t, _, _ in changed],
        )
    first = await conn.fetchval("SELECT 1 FROM bayes_totals WHERE account_id = $1", account_id)
    spam, ham = plan.totals
    await conn.execute(_UPSERT_TOTALS, account_id, spam, ham, 0)
    # The shard's count of accounts that trained.
    await conn.execute(_UPSERT_TOTALS, GLOBAL_STATS, spam, ham, int(first is None))


class PgBayesStore(SqlBayesReads):
    """Reads on the account's shard (its replica when it has one: a
    classification may lag a training by the replica's delay), training
    through ``PgMailboxStore``'s fenced writes."""

    def __init__(self, mailbox: PgMailboxStore) -> None:
        self.mailbox = mailbox
        self.cluster = mailbox.cluster

    async def open(self) -> None:
        await self.cluster.open()

    async def close(self) -> None:
        await self.cluster.close()

    async def ping(self) -> None:
        for database in self.cluster.shard_databases():
            async with database.read() as session:
                await session.all(PING)

    def _read(self, account_id: int) -> Any:
        return _ShardRead(self, account_id)

    async def train(self, account_id: int, trainings: Sequence[Training]) -> list[str | None]:
        if not trainings:
            return []
        batch = list(trainings)

        async def step(conn: asyncpg.Connection, log: PgChangeLog) -> list[str | None]:
            return await train_step(conn, account_id, batch)

        return await self.mailbox.write_account(account_id, step)


class _ShardRead:
    """``async with``: a read session on the account's shard, maybe stale."""

    __slots__ = ("_account_id", "_inner", "_store")

    def __init__(self, store: PgBayesStore, account_id: int) -> None:
        self._store = store
        self._account_id = account_id
        self._inner: Any = None

    async def __aenter__(self) -> Any:
        database = await self._store.cluster.shard(self._account_id)
        self._inner = database.read(stale_ok=True)
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)
