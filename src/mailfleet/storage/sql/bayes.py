"""The Bayes statistics over SQL, shared by SQLite and PostgreSQL: the reads
(portable ``Query`` statements, run on each engine's read sessions) and the
plan of a training (what to add to which counts), which each engine's write
path applies in its own transaction (``storage/embedded/sqlite_bayes.py``,
``storage/distributed/pg_bayes.py``). Decision 0022."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mailfleet.storage.interfaces import BayesStatistics, TokenCounts, Training
from mailfleet.storage.sql.query import Query
from mailfleet.storage.sql.schema import bayes_tokens, bayes_totals

# The global statistics' rows: no account has id 0 (ids are time-ordered).
GLOBAL_STATS = 0
LABELS = ("spam", "ham")

P = sa.bindparam
# Tokens per probe: a fixed shape, compiled once; a short batch is padded
# with "" (never a token).
TOKEN_BATCH = 100
_TOKENS: list[sa.BindParameter[str]] = [P(f"t{i}") for i in range(TOKEN_BATCH)]
PING = Query(sa.select(sa.literal(1)))
_TOTALS = Query(
    sa.select(bayes_totals).where(bayes_totals.c.account_id.in_([P("account_id"), P("global_id")]))
)
_TOKEN_COUNTS = Query(
    sa.select(
        bayes_tokens.c.account_id, bayes_tokens.c.token, bayes_tokens.c.spam, bayes_tokens.c.ham
    ).where(
        bayes_tokens.c.account_id.in_([P("account_id"), P("global_id")]),
        bayes_tokens.c.token.in_(_TOKENS),
    )
)


class SqlBayesReads:
    """``BayesStore.statistics`` on the engine's read sessions."""

    def _read(self, account_id: int) -> Any:
        """The read session for the account's statistics (and the global
        ones beside them)."""
        raise NotImplementedError

    async def statistics(self, account_id: int, tokens: Sequence[str]) -> BayesStatistics:
        account, global_, accounts = TokenCounts(), TokenCounts(), 0
        own: dict[str, TokenCounts] = {}
        shared: dict[str, TokenCounts] = {}
        ids = {"account_id": account_id, "global_id": GLOBAL_STATS}
        async with self._read(account_id) as session:
            for row in await session.all(_TOTALS, **ids):
                counts = TokenCounts(int(row["spam"]), int(row["ham"]))
                if row["account_id"] == GLOBAL_STATS:
                    global_, accounts = counts, int(row["accounts"])
                else:
                    account = counts
            # Nothing trained (a new fleet, an account that never moved
            # mail to Junk and a global that is empty): no token probes.
            if account.spam + account.ham + global_.spam + global_.ham:
                wanted = list(dict.fromkeys(tokens))
                for start in range(0, len(wanted), TOKEN_BATCH):
                    batch = wanted[start : start + TOKEN_BATCH]
                    batch += [""] * (TOKEN_BATCH - len(batch))
                    params = {f"t{i}": t for i, t in enumerate(batch)}
                    for row in await session.all(_TOKEN_COUNTS, **ids, **params):
                        found = own if row["account_id"] != GLOBAL_STATS else shared
                        found[row["token"]] = TokenCounts(int(row["spam"]), int(row["ham"]))
        return BayesStatistics(account, global_, accounts, own, shared)


@dataclass
class TrainingPlan:
    """What a batch of trainings changes: the label to record on each
    message, what each held before, and the deltas of the token counts and
    the totals (the same for the account's statistics and the global ones)."""

    before: list[str | None] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=dict)  # token → [d spam, d ham]
    totals: list[int] = field(default_factory=lambda: [0, 0])

    def sorted_tokens(self) -> list[tuple[str, int, int]]:
        """Changed tokens in token order: concurrent trainings lock the
        shared (global) rows in one order, so they cannot deadlock."""
        return sorted((t, d[0], d[1]) for t, d in self.tokens.items() if d != [0, 0])


def plan_training(trained: Mapping[int, str | None], trainings: Sequence[Training]) -> TrainingPlan:
    """``trained``: each existing message's label now (a missing message is
    absent). Later trainings of a message in the batch see earlier ones."""
    plan = TrainingPlan()
    current = dict(trained)
    for training in trainings:
        if training.label not in LABELS:
            raise ValueError(f"a training label is spam or ham, not {training.label!r}")
        if training.message_id not in current:
            plan.before.append(None)
            continue
        previous = current[training.message_id]
        plan.before.append(previous)
        if previous == training.label or (training.only_untrained and previous is not None):
            continue
        for label, sign in ((previous, -1), (training.label, 1)):
            if label is None:
                continue
            index = LABELS.index(label)
            plan.totals[index] += sign
            for token in dict.fromkeys(training.tokens):
                plan.tokens.setdefault(token, [0, 0])[index] += sign
        current[training.message_id] = training.label
        plan.labels[training.message_id] = training.label
    return plan
