"""worker-in's hot path through ``SqlBayesReads.statistics`` (decision 0022):
one read of the totals, and token probes only when the account or the global
has trained anything, in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from mailfleet.storage.interfaces import TokenCounts
from mailfleet.storage.sql.bayes import GLOBAL_STATS, TOKEN_BATCH, SqlBayesReads
from mailfleet.storage.sql.query import Query


class Recorded(SqlBayesReads):
    """Answers the totals given; counts the statements and sessions."""

    def __init__(self, totals: list[dict[str, int]]) -> None:
        self.totals = totals
        self.statements: list[Query] = []
        self.sessions = 0

    def _read(self, account_id: int) -> Any:
        self.sessions += 1
        return self

    async def __aenter__(self) -> Recorded:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def all(self, query: Query, **params: Any) -> Sequence[Any]:
        self.statements.append(query)
        if "t0" not in params:
            return self.totals
        return [
            {"account_id": 7, "token": params[f"t{i}"], "spam": 1, "ham": 0}
            for i in range(TOKEN_BATCH)
            if params[f"t{i}"]
        ]


TOKENS = [f"token{i}" for i in range(250)]


async def test_nothing_trained_is_one_statement() -> None:
    store = Recorded([])
    stats = await store.statistics(7, TOKENS)
    assert (store.sessions, len(store.statements)) == (1, 1)
    assert stats.account == stats.global_ == TokenCounts()
    assert stats.account_tokens == {}


async def test_trained_reads_the_tokens_in_batches_in_the_same_session() -> None:
    store = Recorded(
        [
            {"account_id": 7, "spam": 3, "ham": 1, "accounts": 0},
            {"account_id": GLOBAL_STATS, "spam": 5, "ham": 2, "accounts": 2},
        ]
    )
    stats = await store.statistics(7, TOKENS + TOKENS[:10])  # repeats asked once
    assert (store.sessions, len(store.statements)) == (1, 1 + 3)
    assert stats.account == TokenCounts(3, 1)
    assert (stats.global_, stats.global_accounts) == (TokenCounts(5, 2), 2)
    assert len(stats.account_tokens) == 250
    assert stats.account_tokens["token249"] == TokenCounts(1, 0)
