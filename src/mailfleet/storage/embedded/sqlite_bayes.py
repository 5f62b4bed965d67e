"""``BayesStore`` on SQLite, in the metadata database: reads on the
caller's thread (``storage/sql/bayes.py``), training on the writer thread,
in one transaction with the messages' ``bayes_trained`` marks. The one
database holds every account: its global statistics are everyone's."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from mailfleet.storage.embedded.sqlite import SqliteDatabase
from mailfleet.storage.interfaces import Training
from mailfleet.storage.sql.bayes import (
    GLOBAL_STATS,
    PING,
    SqlBayesReads,
    TrainingPlan,
    plan_training,
)

_UPSERT_TOKEN = (
    "INSERT INTO bayes_tokens (account_id, token, spam, ham) VALUES (?, ?, max(?, 0), max(?, 0))"
    " ON CONFLICT (account_id, token) DO UPDATE"
    " SET spam = max(bayes_tokens.spam + ?, 0), ham = max(bayes_tokens.ham + ?, 0)"
)
_UPSERT_TOTALS = (
    "INSERT INTO bayes_totals (account_id, spam, ham, accounts)"
    " VALUES (?, max(?, 0), max(?, 0), ?)"
    " ON CONFLICT (account_id) DO UPDATE SET spam = max(bayes_totals.spam + ?, 0),"
    " ham = max(bayes_totals.ham + ?, 0), accounts = bayes_totals.accounts + ?"
)


def train_sync(
    conn: sqlite3.Connection, account_id: int, trainings: Sequence[Training]
) -> list[str | None]:
    ids = list(dict.fromkeys(t.message_id for t in trainings))
    marks = ", ".join("?" for _ in ids)
    trained = {
        int(r[0]): r[1]
        for r in conn.execute(
            f"SELECT id, bayes_trained FROM messages WHERE account_id = ? AND id IN ({marks})",
            (account_id, *ids),
        )
    }
    plan = plan_training(trained, trainings)
    if plan.labels:
        apply_sync(conn, account_id, plan)
    return plan.before


def apply_sync(conn: sqlite3.Connection, account_id: int, plan: TrainingPlan) -> None:
    conn.executemany(
        "UPDATE messages SET bayes_trained = ? WHERE account_id = ? AND id = ?",
        [(label, account_id, message_id) for message_id, label in plan.labels.items()],
    )
    changed = plan.sorted_tokens()
    for owner in (account_id, GLOBAL_STATS):
        conn.executemany(_UPSERT_TOKEN, [(owner, t, ds, dh, ds, dh) for t, ds, dh in changed])
    # Rows that fell to nothing go: untrained tokens do not pile up.
    conn.executemany(
        "DELETE FROM bayes_tokens WHERE account_id = ? AND token = ? AND spam = 0 AND ham = 0",
        [(owner, t) for owner in (account_id, GLOBAL_STATS) for t, _, _ in changed],
    )
    first = conn.execute(
        "SELECT 1 FROM bayes_totals WHERE account_id = ?", (account_id,)
    ).fetchone()
    spam, ham = plan.totals
    conn.execute(_UPSERT_TOTALS, (account_id, spam, ham, 0, spam, ham, 0))
    joined = int(first is None)  # the global's count of accounts that trained
    conn.execute(_UPSERT_TOTALS, (GLOBAL_STATS, spam, ham, joined, spam, ham, joined))


class SqliteBayesStore(SqlBayesReads):
    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def ping(self) -> None:
        async with self.database.reader.read() as session:
            await session.all(PING)

    def _read(self, account_id: int) -> Any:
        return self.database.reader.read()

    async def train(self, account_id: int, trainings: Sequence[Training]) -> list[str | None]:
        if not trainings:
            return []
        batch = list(trainings)
        return await self.database.writer.run(lambda conn: train_sync(conn, account_id, batch))
