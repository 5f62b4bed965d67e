"""The filter pipeline: every filter on one mail, one outcome.

The outcome's verdict is the strongest of what the filters said and of what
the total score says against the deployment's thresholds (``[filters]``:
``spam_score``, ``reject_score``). Its headers go on the stored copy:
each filter's own (``Authentication-Results``) and ``X-Spam-*``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mailfleet.config import ClamdAddress, FilterSettings
from mailfleet.filters import (
    VERDICT_ORDER,
    Filter,
    FilterResult,
    MailToCheck,
    Reason,
    Verdict,
)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    score: float
    reasons: tuple[Reason, ...]
    headers: tuple[tuple[str, str], ...]
    # A filter said QUARANTINE (a virus), whatever stronger verdict won:
    # mail already accepted is then held, never put in Junk for the score.
    quarantined: bool = False
    # What each filter said: a per-recipient filter (Bayes) adds its result
    # to them (``FilterPipeline.extended``).
    results: tuple[FilterResult, ...] = ()

    def header_block(self) -> str:
        """The headers for the stored copy, CRLF-terminated lines."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.headers)


def _strongest(verdicts: Sequence[Verdict]) -> Verdict:
    return max(verdicts, key=VERDICT_ORDER.index, default=Verdict.HAM)


def _fold(name: str, items: Sequence[str], width: int = 78) -> str:
    """A header value of comma-separated ``items``, folded (RFC 5322 2.2.3)
    so that no line passes ``width``."""
    lines: list[str] = []
    line = ""
    start = len(name) + 2
    for index, item in enumerate(items):
        piece = f"{item}," if index < len(items) - 1 else item
        if line and start + len(line) + 1 + len(piece) > width:
            lines.append(line)
            line, start = piece, 1
        else:
            line = f"{line} {piece}" if line else piece
    lines.append(line)
    return "\r\n\t".join(lines)


class FilterPipeline:
    def __init__(
        self, filters: Sequence[Filter], *, spam_score: float, reject_score: float
    ) -> None:
        self.filters = tuple(filters)
        self.spam_score = spam_score
        self.reject_score = reject_score

    @classmethod
    def from_settings(cls, settings: FilterSettings) -> FilterPipeline:
        """Inbound mail's pipeline: the spam rules and the content filters."""
        from mailfleet.filters.rules import BuiltinRules

        filters: list[Filter] = [BuiltinRules()] if settings.builtin_rules else []
        filters += content_filters(settings)
        return cls(filters, spam_score=settings.spam_score, reject_score=settings.reject_score)

    @classmethod
    def for_sending(cls, settings: FilterSettings) -> FilterPipeline:
        """What a user's own send passes before anything is stored: the
        content filters only (viruses, blocked attachments)."""
        return cls(
            content_filters(settings),
            spam_score=settings.spam_score,
            reject_score=settings.reject_score,
        )

    async def run(self, mail: MailToCheck) -> Outcome:
        """Raises FilterUnavailable when a filter cannot answer now."""
        results: list[FilterResult] = list(
            await asyncio.gather(*(f.check(mail) for f in self.filters))
        )
        return self.outcome(results)

    def extended(self, outcome: Outcome, result: FilterResult) -> Outcome:
        """The outcome with one more filter's result: the mail-wide filters
        run once per mail, the Bayes classifier once per recipient."""
        return self.outcome([*outcome.results, result])

    def outcome(self, results: Sequence[FilterResult]) -> Outcome:
        score = round(sum(r.score for r in results), 2)
        reasons = tuple(reason for r in results for reason in r.reasons)
        by_score = (
            Verdict.REJECT
            if score >= self.reject_score
            else Verdict.SPAM
            if score >= self.spam_score
            else Verdict.HAM
        )
        verdict = _strongest([by_score, *(r.verdict for r in results if r.verdict)])
        status = "Yes" if verdict != Verdict.HAM else "No"
        names = [f"{r.name}={r.score:g}" for r in reasons] or ["none"]
        headers = (
            *(h for r in results for h in r.headers),
            ("X-Spam-Status", f"{status}, score={score:g} required={self.spam_score:g}"),
            ("X-Spam-Verdict", verdict.value),
            ("X-Spam-Reasons", _fold("X-Spam-Reasons", names)),
        )
        quarantined = any(r.verdict == Verdict.QUARANTINE for r in results)
        return Outcome(verdict, score, reasons, headers, quarantined, tuple(results))


def content_filters(settings: FilterSettings) -> list[Filter]:
    """The filters that judge what a mail carries rather than how it reads:
    the attachment policy and clamd, as configured."""
    from mailfleet.filters.attachments import AttachmentPolicy
    from mailfleet.filters.clamav import ClamAV, ClamdScanner

    filters: list[Filter] = []
    if settings.attachment_policy:
        filters.append(AttachmentPolicy(settings.blocked_extensions))
    if settings.clamd:
        scanner = ClamdScanner(
            ClamdAddress.parse(settings.clamd),
            timeout=settings.clamd_timeout_seconds,
            max_stream=settings.clamd_max_stream_bytes,
        )
        filters.append(ClamAV(scanner))
    return filters
