"""The Bayes classifier's tokenizer and arithmetic (filters/bayes.py), on
statistics built in memory: what the store would hold after the trainings
each test describes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.filters.bayes import (
    HAM_CUTOFF,
    MAX_TEXT,
    MAX_TOKENS,
    SPAM_CUTOFF,
    Classifier,
    chi2q,
    combine,
    mail_tokens,
    reason_for,
    token_probability,
)
from mailfleet.storage.interfaces import BayesStatistics, TokenCounts


def watches(n: int) -> tuple[str, ...]:
    return mail_tokens(
        f"Cheap Rolex watches, offer {n}",
        f"promo{n}@deals{n % 3}.example",
        f"Luxury replica watches at 90% off, today only. Order {n} at "
        f"http://shop{n}.watch-deals.example/buy?id={n}\nUnsubscribe here.",
    )


def work(n: int) -> tuple[str, ...]:
    topics = ["budget", "roadmap", "hiring", "offsite", "release", "review"]
    topic = topics[n % len(topics)]
    return mail_tokens(
        f"Re: {topic} meeting notes",
        f"colleague{n}@corp.example",
        f"Hi, attached are the notes on the {topic} from Tuesday. Can we go over "
        f"the open points before Friday? See https://wiki.corp.example/{topic}\nThanks",
    )


class Memory:
    """Counts as ``BayesStore`` keeps them, for one account and the global."""

    def __init__(self) -> None:
        self.totals = {"spam": 0, "ham": 0}
        self.tokens: dict[str, dict[str, int]] = {}

    def train(self, label: str, tokens: Sequence[str], sign: int = 1) -> Memory:
        self.totals[label] += sign
        for token in set(tokens):
            self.tokens.setdefault(token, {"spam": 0, "ham": 0})[label] += sign
        return self

    def counts(self) -> tuple[TokenCounts, dict[str, TokenCounts]]:
        return TokenCounts(self.totals["spam"], self.totals["ham"]), {
            t: TokenCounts(c["spam"], c["ham"]) for t, c in self.tokens.items()
        }


def statistics(
    account: Memory | None = None, shared: Memory | None = None, accounts: int = 0
) -> BayesStatistics:
    own_totals, own = (account or Memory()).counts()
    global_totals, global_tokens = (shared or Memory()).counts()
    return BayesStatistics(own_totals, global_totals, accounts, own, global_tokens)


def trained(spam: int = 20, ham: int = 10) -> Memory:
    memory = Memory()
    for n in range(spam):
        memory.train("spam", watches(n))
    for n in range(ham):
        memory.train("ham", work(n))
    return memory


CLASSIFIER = Classifier(min_trained=10, min_accounts=5)

# -- tokens ------------------------------------------------------------------------


def test_tokens_of_subject_sender_domain_links_and_body() -> None:
    found = mail_tokens(
        "Cheap WATCHES",
        "Promo@Mail.Deals.Example",
        "Buy at https://user@www.Shop.example:8080/x?y=1 or ftp://files.example now",
        '<a href="http://tracker.example/p">x</a>',
    )
    assert found[:2] == ("subject:cheap", "subject:watches")
    assert {"from:mail.deals.example", "from:deals.example"} <= set(found)
    assert {"url:www.shop.example", "url:shop.example", "url:files.example"} <= set(found)
    assert "url:tracker.example" in found
    assert {"buy", "now"} <= set(found)
    assert "y" not in found  # one letter says nothing
    assert len(found) == len(set(found))


def test_tokens_fold_accents_and_cut_cjk_into_pairs_and_long_runs_into_a_shape() -> None:
    found = mail_tokens("Café 회의를", None, "Müller " + "A" * 57)
    assert {"subject:cafe", "subject:회의", "subject:의를", "muller", "skip:a 50"} <= set(found)


def test_tokens_are_bounded_per_mail() -> None:
    body = " ".join(f"word{n}" for n in range(5 * MAX_TOKENS))
    found = mail_tokens("Subject here", "a@b.example", body)
    assert len(found) == MAX_TOKENS
    # Subject, sender and links come first: a long body cannot push them out.
    assert found[:4] == ("subject:subject", "subject:here", "from:b.example", "word0")


def test_only_the_start_of_a_long_text_is_read() -> None:
    filler = "same " * (MAX_TEXT // 5)
    found = mail_tokens("", None, filler + "late http://late.example/", "x" * MAX_TEXT + " later")
    assert found == ("same",)
    assert mail_tokens("", None, "see http://10.0.0.1/x") == ("url:10.0.0.1", "see", "http", "10")


# -- arithmetic ----------------------------------------------------------------------


def test_chi2q_matches_known_values() -> None:
    # chi² with 2 degrees of freedom is exp(-x/2); with 4, (1 + x/2) exp(-x/2).
    assert chi2q(2.0, 2) == pytest.approx(0.36787944)
    assert chi2q(2.0, 4) == pytest.approx(0.73575888)
    assert chi2q(0.0, 10) == 1.0


def test_combining_says_spam_ham_or_unsure() -> None:
    assert combine([]) == 0.5
    assert combine([0.99] * 10) > 0.99
    assert combine([0.01] * 10) < 0.01
    # Strong evidence both ways is "unsure", not a coin flip to 0 or 1.
    assert combine([0.99] * 10 + [0.01] * 10) == pytest.approx(0.5, abs=0.01)


def test_token_probability_is_robinsons_smoothed_ratio() -> None:
    totals = TokenCounts(10, 10)
    assert token_probability(TokenCounts(0, 0), totals) == 0.5
    # Seen in 1 of 10 spam, no ham: (0.45·0.5 + 1·1) / 1.45
    assert token_probability(TokenCounts(1, 0), totals) == pytest.approx(1.225 / 1.45)
    # Classes are normalized by their sizes: 2 of 20 spam vs 1 of 10 ham is even.
    assert token_probability(TokenCounts(2, 1), TokenCounts(20, 10)) == pytest.approx(0.5)


@given(
    probabilities=st.lists(
        st.floats(min_value=1e-6, max_value=1 - 1e-6, allow_nan=False), max_size=200
    )
)
def test_combined_probability_stays_between_0_and_1(probabilities: list[float]) -> None:
    assert 0.0 <= combine(probabilities) <= 1.0


@given(
    spam=st.integers(0, 10_000),
    ham=st.integers(0, 10_000),
    total_spam=st.integers(0, 10_000),
    total_ham=st.integers(0, 10_000),
    prior=st.floats(min_value=0.01, max_value=0.99),
)
def test_token_probability_stays_strictly_between_0_and_1(
    spam: int, ham: int, total_spam: int, total_ham: int, prior: float
) -> None:
    p = token_probability(
        TokenCounts(spam, ham), TokenCounts(max(spam, total_spam), max(ham, total_ham)), prior
    )
    assert 0.0 < p < 1.0


# -- opinions ---------------------------------------------------------------------


def test_a_fresh_account_and_an_empty_global_have_no_opinion() -> None:
    assert CLASSIFIER.judge(statistics(), watches(99)) is None


def test_too_little_of_either_class_is_no_opinion() -> None:
    assert CLASSIFIER.judge(statistics(trained(spam=20, ham=9)), watches(99)) is None
    assert CLASSIFIER.judge(statistics(trained(spam=9, ham=20)), watches(99)) is None


def test_after_training_similar_mail_is_spam_and_other_mail_ham() -> None:
    stats = statistics(trained())
    spam = CLASSIFIER.judge(stats, watches(99))
    ham = CLASSIFIER.judge(stats, work(99))
    assert spam is not None
    assert ham is not None
    assert spam.probability >= SPAM_CUTOFF
    assert spam.source == "account"
    assert ham.probability <= HAM_CUTOFF
    spam_result, ham_result = reason_for(spam, 6.0), reason_for(ham, 6.0)
    assert [r.name for r in spam_result.reasons] == ["BAYES_SPAM"]
    # Alone past the pipeline's spam score (5): the user's own teaching decides.
    assert spam_result.score >= 5
    assert [r.name for r in ham_result.reasons] == ["BAYES_HAM"]
    assert ham_result.score <= -3
    assert spam_result.reasons[0].detail.startswith(f"p={spam.probability:.4f} from ")


def lottery(n: int) -> tuple[str, ...]:
    return mail_tokens(f"You won {n}", f"x{n}@lottery.example", f"Claim prize {n} today")


def test_untraining_and_training_the_opposite_turns_the_opinion() -> None:
    memory = trained(spam=20, ham=10)
    for n in range(10):
        memory.train("spam", lottery(n))
    before = CLASSIFIER.judge(statistics(memory), watches(99))
    assert before is not None
    assert before.probability >= SPAM_CUTOFF
    for n in range(20):  # the watches mails moved back out of Junk
        memory.train("spam", watches(n), sign=-1).train("ham", watches(n))
    judgement = CLASSIFIER.judge(statistics(memory), watches(99))
    assert judgement is not None
    assert judgement.probability <= HAM_CUTOFF


def test_the_global_judges_a_fresh_account_only_when_enough_accounts_trained_it() -> None:
    shared = trained(spam=40, ham=40)
    assert CLASSIFIER.judge(statistics(None, shared, accounts=4), watches(99)) is None
    judgement = CLASSIFIER.judge(statistics(None, shared, accounts=5), watches(99))
    assert judgement is not None
    assert judgement.source == "global"
    assert judgement.probability >= SPAM_CUTOFF


def test_an_accounts_own_training_outweighs_the_global() -> None:
    """Everyone else calls the watches spam; this user wants them (trained
    them as ham): the user's own evidence wins."""
    shared = trained(spam=200, ham=200)
    own = Memory()
    for n in range(15):
        own.train("ham", watches(n))
    for n in range(15):
        own.train("spam", lottery(n))
    judgement = CLASSIFIER.judge(statistics(own, shared, accounts=50), watches(99))
    assert judgement is not None
    assert judgement.source == "account+global"
    assert judgement.probability <= HAM_CUTOFF
    # And a kind of mail the account never trained is judged by the global.
    other = CLASSIFIER.judge(statistics(own, shared, accounts=50), work(99))
    assert other is not None
    assert other.probability <= HAM_CUTOFF


@given(
    spam=st.integers(0, 25),
    ham=st.integers(0, 25),
    shape=st.sampled_from([watches, work]),
    n=st.integers(0, 1000),
)
def test_any_opinion_is_a_probability(spam: int, ham: int, shape: object, n: int) -> None:
    assert callable(shape)
    judgement = CLASSIFIER.judge(statistics(trained(spam, ham), trained(ham, spam), 9), shape(n))
    if judgement is not None:
        assert 0.0 <= judgement.probability <= 1.0
        assert all(0.0 < p < 1.0 for _, p in judgement.clues)
