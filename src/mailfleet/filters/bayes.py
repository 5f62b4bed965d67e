"""The Bayes classifier (issue 13 point 3, decision 0022): per-account and
global token statistics, trained when a user moves mail into or out of
Junk, judging each mail for each recipient.

The method is SpamBayes' (Gary Robinson's): each token's spam probability
``f(w) = (s·x + n·p(w)) / (s + n)``, where ``p(w)`` is the share of the
trained spam among the trained mails holding it (each class normalized by
its size), ``n`` how many trained mails held it, and ``x`` the probability
assumed before any evidence, with strength ``s``; the most telling tokens
(``|f(w) − ½| ≥ 0.1``, at most 150) are combined with Fisher's chi-square
method into ``S`` (spamminess) and ``H`` (hamminess), and the mail's
probability is ``(1 + S − H) / 2``. Unlike Graham's product, chi-square
combining says "unsure" (near ½) when the evidence points both ways
instead of jumping to 0 or 1.

Per account and global: an account with ``min_trained`` spam and ham
mails judges with its own counts, and the global statistics (when they
have an opinion) are the ``x`` of each token, with strength
``GLOBAL_STRENGTH``: the account's own evidence outweighs the global's as
soon as it has seen a token a couple of times. An account with too little
training is judged by the global statistics alone, and only when they
were trained by ``min_accounts`` accounts (one user's taste is not
everyone's). With neither, there is no opinion: a fresh account is never
misjudged.

Tokens (``mail_tokens``): words of the subject (``subject:`` prefixed) and
of the body text (our search tokenizer: case and accents folded, CJK as
character pairs), the From domain and its parents, and the hosts of the
links; distinct, at most ``MAX_TOKENS`` per mail (the statistics read is
one batch of bounded size).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailfleet.config import FilterSettings
from mailfleet.filters import FilterResult, Reason
from mailfleet.search.tokens import tokens as words
from mailfleet.storage.interfaces import BayesStatistics, BayesStore, TokenCounts, Training

SPAM, HAM = "spam", "ham"
MAX_TOKENS = 300
# Only the start of the text and of the HTML is read: 300 distinct tokens
# come from far less, and worker-in must not spend milliseconds on a long
# mail (a 160 KB body took 7 ms whole).
MAX_TEXT = 20_000
MIN_WORD, MAX_WORD = 2, 40
# SpamBayes' defaults (Options.py): the strength and value of the prior, how
# far from ½ a token must be to count, how many count, and the cutoffs.
UNKNOWN_STRENGTH = 0.45
UNKNOWN_PROBABILITY = 0.5
MIN_PROB_STRENGTH = 0.1
MAX_DISCRIMINATORS = 150
HAM_CUTOFF = 0.20
SPAM_CUTOFF = 0.90
# The global view of a token weighs as much as this many of the account's
# own trained mails holding it.
GLOBAL_STRENGTH = 2.0

_URL = re.compile(r"""(?i)\b(?:https?|ftp)://(?:[^\s/?#@"'<>]*@)?([^\s/:?#"'<>]+)""")
_BARE_DOMAIN_PARTS = 2


def _domain_tokens(prefix: str, domain: str) -> list[str]:
    """``url:www.shop.example`` and its parents down to two labels: a
    spammer's many subdomains share the parent's reputation."""
    labels = [part for part in domain.lower().strip(".").split(".") if part]
    return [
        f"{prefix}:{'.'.join(labels[i:])}"
        for i in range(max(1, len(labels) - _BARE_DOMAIN_PARTS + 1))
    ]


def _url_hosts(texts: Iterable[str]) -> list[str]:
    found: list[str] = []
    for text in texts:
        for host in _URL.findall(text):
            if host.replace(".", "").isdigit():  # an IP literal has no parents
                found.append(f"url:{host}")
            else:
                found.extend(_domain_tokens("url", host))
    return found


def _head(text: str) -> str:
    """The first MAX_TEXT characters, not cutting a word in two."""
    if len(text) <= MAX_TEXT:
        return text
    cut = text.rfind(" ", 0, MAX_TEXT)
    return text[: cut if cut > 0 else MAX_TEXT]


def mail_tokens(
    subject: str, sender_email: str | None, text: str, html: str | None = None
) -> tuple[str, ...]:
    """The tokens the classifier sees of a mail: the same in worker-in (from
    the parsed mail) and when training (from the stored copy: its subject,
    sender, text and sanitized HTML)."""
    out: list[str] = [f"subject:{w}" for w in words(subject) if MIN_WORD <= len(w) <= MAX_WORD]
    if sender_email and "@" in sender_email:
        out.extend(_domain_tokens("from", sender_email.rpartition("@")[2]))
    text = _head(text)
    out.extend(_url_hosts([text, _head(html or "")]))
    for word in words(text):
        if len(word) > MAX_WORD:
            # As SpamBayes: long runs (base64, hashes) say little one by
            # one, but their first letter and length do.
            out.append(f"skip:{word[0]} {len(word) // 10 * 10}")
        elif len(word) >= MIN_WORD:
            out.append(word)
    return tuple(dict.fromkeys(out))[:MAX_TOKENS]


# -- the arithmetic ---------------------------------------------------------------


def token_probability(
    counts: TokenCounts,
    totals: TokenCounts,
    prior: float = UNKNOWN_PROBABILITY,
    strength: float = UNKNOWN_STRENGTH,
) -> float:
    """Robinson's f(w): the token's spam probability from ``counts`` out of
    ``totals`` trained mails, pulled towards ``prior`` by ``strength``."""
    spam_ratio = counts.spam / max(totals.spam, 1)
    ham_ratio = counts.ham / max(totals.ham, 1)
    n = counts.spam + counts.ham
    if n == 0 or spam_ratio + ham_ratio == 0:
        return prior
    raw = spam_ratio / (spam_ratio + ham_ratio)
    return (strength * prior + n * raw) / (strength + n)


def chi2q(x2: float, freedom: int) -> float:
    """P(chi² ≥ x2) with an even number of degrees of freedom (the series
    SpamBayes uses; exact for even ``freedom``)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, freedom // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities: Sequence[float]) -> float:
    """Fisher/Robinson chi-square combining of token probabilities (each in
    (0, 1)) into the mail's spam probability, in [0, 1]."""
    n = len(probabilities)
    if n == 0:
        return 0.5
    log_ham = math.fsum(math.log(p) for p in probabilities)
    log_spam = math.fsum(math.log1p(-p) for p in probabilities)
    spamminess = 1.0 - chi2q(-2.0 * log_spam, 2 * n)
    hamminess = 1.0 - chi2q(-2.0 * log_ham, 2 * n)
    return min(1.0, max(0.0, (spamminess - hamminess + 1.0) / 2.0))


@dataclass(frozen=True, slots=True)
class Judgement:
    probability: float
    clues: tuple[tuple[str, float], ...]  # the tokens that counted, most telling first
    source: str  # "account", "account+global" or "global"


class Classifier:
    """Judges from statistics already read; no I/O."""

    def __init__(self, *, min_trained: int, min_accounts: int) -> None:
        self.min_trained = min_trained
        self.min_accounts = min_accounts

    def _enough(self, totals: TokenCounts) -> bool:
        return totals.spam >= self.min_trained and totals.ham >= self.min_trained

    def _global_usable(self, stats: BayesStatistics) -> bool:
        return self._enough(stats.global_) and stats.global_accounts >= self.min_accounts

    def judge(self, stats: BayesStatistics, tokens: Sequence[str]) -> Judgement | None:
        """None: too little training to have an opinion."""
        own = self._enough(stats.account)
        shared = self._global_usable(stats)
        if not (own or shared):
            return None
        probabilities: list[tuple[float, str]] = []
        for token in dict.fromkeys(tokens):
            if shared:
                global_counts = stats.global_tokens.get(token)
                prior = (
                    token_probability(global_counts, stats.global_)
                    if global_counts is not None
                    else UNKNOWN_PROBABILITY
                )
            else:
                prior = UNKNOWN_PROBABILITY
            if own:
                counts = stats.account_tokens.get(token, TokenCounts())
                strength = GLOBAL_STRENGTH if prior != UNKNOWN_PROBABILITY else UNKNOWN_STRENGTH
                p = token_probability(counts, stats.account, prior, strength)
            else:
                p = prior
            if abs(p - 0.5) >= MIN_PROB_STRENGTH:
                probabilities.append((p, token))
        probabilities.sort(key=lambda item: -abs(item[0] - 0.5))
        clues = probabilities[:MAX_DISCRIMINATORS]
        source = "account+global" if own and shared else "account" if own else "global"
        return Judgement(combine([p for p, _ in clues]), tuple((t, p) for p, t in clues), source)


def reason_for(judgement: Judgement, weight: float) -> FilterResult:
    """The pipeline's view of a judgement: ``BAYES_SPAM`` past the spam
    cutoff, ``BAYES_HAM`` (a negative score) past the ham cutoff, else
    ``BAYES_UNSURE`` with no score."""
    p = judgement.probability
    if p >= SPAM_CUTOFF:
        name = "BAYES_SPAM"
    elif p <= HAM_CUTOFF:
        name = "BAYES_HAM"
    else:
        name = "BAYES_UNSURE"
    score = round(weight * (2 * p - 1), 2) if name != "BAYES_UNSURE" else 0.0
    top = ", ".join(token for token, _ in judgement.clues[:3])
    detail = f"p={p:.4f} from {len(judgement.clues)} tokens ({judgement.source})"
    if top:
        detail += f"; most telling: {top}"
    return FilterResult(score=score, reasons=(Reason(name, score, detail),))


# -- the filter and its teacher ---------------------------------------------------


class BayesFilter:
    """Per recipient account: ``check`` in worker-in, ``train`` on moves."""

    name = "bayes"

    def __init__(
        self, store: BayesStore, *, min_trained: int, min_accounts: int, weight: float
    ) -> None:
        self.store = store
        self.classifier = Classifier(min_trained=min_trained, min_accounts=min_accounts)
        self.weight = weight
        self.min_trained = min_trained

    @classmethod
    def from_settings(cls, store: BayesStore, settings: FilterSettings) -> BayesFilter | None:
        if not settings.bayes:
            return None
        return cls(
            store,
            min_trained=settings.bayes_min_trained,
            min_accounts=settings.bayes_min_accounts,
            weight=settings.bayes_weight,
        )

    async def check(self, account_id: int, tokens: Sequence[str]) -> FilterResult | None:
        """The account's Bayes result for a mail of ``tokens``; None when
        the classifier has no opinion (too little training). One read of
        the statistics (no token probes when nothing was ever trained);
        raises ``BackendUnavailable`` as the store does (the mail waits)."""
        stats = await self.store.statistics(account_id, tokens)
        judgement = self.classifier.judge(stats, tokens)
        return reason_for(judgement, self.weight) if judgement is not None else None

    async def train(self, account_id: int, trainings: Sequence[Training]) -> list[str | None]:
        return await self.store.train(account_id, trainings)

    async def needs_ham(self, account_id: int) -> bool:
        """Whether the account has trained too little ham to have an opinion
        of its own (``MailboxService`` then learns ham from mail it kept)."""
        stats = await self.store.statistics(account_id, ())
        return stats.account.ham < self.min_trained
