"""BayesStore contract: per-account token statistics beside the mailbox and
global ones beside them, trained idempotently by what each message was last
taught. Runs against every selected implementation (SQLite; PostgreSQL on
two shards, where "global" is the shard's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfleet.storage.interfaces import TokenCounts, Training

from . import backends
from .implementations.bayes import BayesBackend
from .mailboxes import Box, mail, new_box


@pytest.fixture(params=backends.params("bayes"))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BayesBackend]:
    async with request.param.open(tmp_path) as opened:
        yield opened


async def stored(backend: BayesBackend, box: Box, count: int, folder: str = "inbox") -> list[int]:
    messages = [mail(box, folder) for _ in range(count)]
    return await backend.mailbox.store_messages(messages)


async def test_nothing_trained_answers_zeros(backend: BayesBackend) -> None:
    box = await new_box(backend.mailbox)
    stats = await backend.bayes.statistics(box.account_id, ["cheap", "watches"])
    assert stats.account == TokenCounts(0, 0)
    assert stats.account_tokens == {}
    assert stats.global_tokens == {}


async def test_training_counts_per_account_and_globally(backend: BayesBackend) -> None:
    a, b = await new_box(backend.mailbox), await new_box(backend.mailbox)
    (m1, m2) = await stored(backend, a, 2)
    before = await backend.bayes.train(
        a.account_id,
        [Training(m1, "spam", ("cheap", "watches")), Training(m2, "ham", ("lunch", "cheap"))],
    )
    assert before == [None, None]
    stats = await backend.bayes.statistics(a.account_id, ["cheap", "watches", "lunch", "nope"])
    assert stats.account == TokenCounts(1, 1)
    assert stats.account_tokens == {
        "cheap": TokenCounts(1, 1),
        "watches": TokenCounts(1, 0),
        "lunch": TokenCounts(0, 1),
    }
    # The global statistics hold the account's training (with whatever
    # else its database or shard holds: here nothing).
    assert stats.global_ == TokenCounts(1, 1)
    assert stats.global_tokens["watches"] == TokenCounts(1, 0)
    assert stats.global_accounts == 1
    # Another account's own statistics are its own.
    other = await backend.bayes.statistics(b.account_id, ["cheap", "watches"])
    assert other.account == TokenCounts(0, 0)
    assert other.account_tokens == {}


async def test_training_twice_counts_once_and_the_opposite_untrains(
    backend: BayesBackend,
) -> None:
    box = await new_box(backend.mailbox)
    (m,) = await stored(backend, box, 1)
    tokens = ("cheap", "watches")
    assert await backend.bayes.train(box.account_id, [Training(m, "spam", tokens)]) == [None]
    assert await backend.bayes.train(box.account_id, [Training(m, "spam", tokens)]) == ["spam"]
    stats = await backend.bayes.statistics(box.account_id, tokens)
    assert stats.account == TokenCounts(1, 0)
    assert stats.account_tokens["cheap"] == TokenCounts(1, 0)
    assert await backend.bayes.train(box.account_id, [Training(m, "ham", tokens)]) == ["spam"]
    stats = await backend.bayes.statistics(box.account_id, tokens)
    assert stats.account == TokenCounts(0, 1)
    assert stats.account_tokens["cheap"] == TokenCounts(0, 1)
    assert stats.global_tokens["cheap"] == TokenCounts(0, 1)
    message = await backend.mailbox.get_message(box.account_id, m)
    assert message is not None
    assert message.bayes_trained == "ham"


async def test_only_untrained_leaves_taught_mail_alone(backend: BayesBackend) -> None:
    box = await new_box(backend.mailbox)
    (m,) = await stored(backend, box, 1)
    await backend.bayes.train(box.account_id, [Training(m, "spam", ("x1",))])
    before = await backend.bayes.train(
        box.account_id, [Training(m, "ham", ("x1",), only_untrained=True)]
    )
    assert before == ["spam"]
    stats = await backend.bayes.statistics(box.account_id, ["x1"])
    assert stats.account == TokenCounts(1, 0)


async def test_another_accounts_message_is_not_trained(backend: BayesBackend) -> None:
    a, b = await new_box(backend.mailbox), await new_box(backend.mailbox)
    (m,) = await stored(backend, a, 1)
    assert await backend.bayes.train(b.account_id, [Training(m, "spam", ("x",))]) == [None]
    assert (await backend.bayes.statistics(b.account_id, ["x"])).account == TokenCounts(0, 0)
    message = await backend.mailbox.get_message(a.account_id, m)
    assert message is not None
    assert message.bayes_trained is None


async def test_concurrent_trainings_of_two_accounts_sharing_tokens(
    backend: BayesBackend,
) -> None:
    """Global rows are shared: concurrent trainings neither deadlock nor
    lose a count."""
    boxes = [await new_box(backend.mailbox) for _ in range(4)]
    ids = [await stored(backend, box, 3) for box in boxes]
    tokens = tuple(f"t{i}" for i in range(50))
    await asyncio.gather(
        *(
            backend.bayes.train(
                box.account_id,
                [Training(m, "spam", tokens[::-1] if n % 2 else tokens) for m in mine],
            )
            for n, (box, mine) in enumerate(zip(boxes, ids, strict=True))
        )
    )
    seen = 0
    for box in boxes:
        stats = await backend.bayes.statistics(box.account_id, tokens)
        assert stats.account == TokenCounts(3, 0)
        assert stats.account_tokens["t7"] == TokenCounts(3, 0)
        seen = max(seen, stats.global_tokens["t7"].spam)
    # SQLite: one global of all four; PostgreSQL: each shard's, and the
    # fullest of two shards holds at least half of them.
    assert seen >= 6


LABELS = st.sampled_from(["spam", "ham"])
WORDS = st.sampled_from(["cheap", "watches", "lunch", "budget", "회의", "rolex", "url:x.example"])


@pytest.fixture(scope="module", params=backends.params("bayes"))
def looped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[asyncio.AbstractEventLoop, BayesBackend]]:
    """One store for every example of the property (each makes its own
    account), on a loop of its own: hypothesis runs examples synchronously."""
    loop = asyncio.new_event_loop()
    opened = request.param.open(Path(tmp_path_factory.mktemp("bayes-property")))
    backend = loop.run_until_complete(opened.__aenter__())
    yield loop, backend
    loop.run_until_complete(opened.__aexit__(None, None, None))
    loop.close()


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 4), LABELS, st.frozensets(WORDS, min_size=1, max_size=4), st.booleans()
        ),
        max_size=20,
    )
)
def test_counts_are_what_the_last_teaching_of_each_message_says(
    looped: tuple[asyncio.AbstractEventLoop, BayesBackend],
    steps: list[tuple[int, str, frozenset[str], bool]],
) -> None:
    """Whatever the order of trainings, re-trainings and opposite ones, the
    counts equal a recount over each message's final label (each message
    always has the same tokens, as the tokenizer gives them), and never go
    below zero."""
    loop, backend = looped
    loop.run_until_complete(_replay(backend, steps))


async def _replay(
    backend: BayesBackend, steps: list[tuple[int, str, frozenset[str], bool]]
) -> None:
    box = await new_box(backend.mailbox)
    ids = await stored(backend, box, 5)
    tokens: dict[int, tuple[str, ...]] = {}
    final: dict[int, str] = {}
    for index, label, words, only_untrained in steps:
        message = ids[index]
        own = tokens.setdefault(message, tuple(sorted(words)))
        await backend.bayes.train(
            box.account_id, [Training(message, label, own, only_untrained=only_untrained)]
        )
        if not (only_untrained and message in final):
            final[message] = label
    universe = sorted({t for own in tokens.values() for t in own})
    stats = await backend.bayes.statistics(box.account_id, universe)
    assert stats.account == TokenCounts(
        sum(1 for label in final.values() if label == "spam"),
        sum(1 for label in final.values() if label == "ham"),
    )
    for token in universe:
        expected = TokenCounts(
            sum(1 for m, label in final.items() if label == "spam" and token in tokens[m]),
            sum(1 for m, label in final.items() if label == "ham" and token in tokens[m]),
        )
        assert stats.account_tokens.get(token, TokenCounts()) == expected, token
