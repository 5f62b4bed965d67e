"""The filter pipeline: every filter on one mail, one outcome.

The outcome's verdict is the strongest of what the filters said and of what
the total score says against the deployment's thresholds (``[filters]``:
``spam_score``, ``reject_score``). Its headers go on the stored copy:
each filter's own (``Authentication-Results``) and ``X-Spam-*``.

Some filters also run at SMTP time (``smtp_filters``: sender authentication,
which needs the headers and DNS but no parse), where a ``reject`` can still
be said to the client instead of filing the mail in Junk; what they found
travels with the mail on the queue and is not asked again in worker-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailfleet.config import ClamdAddress, FilterSettings, Settings
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


def refusal(results: Mapping[str, FilterResult]) -> str | None:
    """The SMTP reply text for checks of which one says ``reject``, else None:
    what counted against the mail in the refusing filters (the reasons that
    added to the score), printable ASCII, bounded."""
    refusing = [r for r in results.values() if r.verdict == Verdict.REJECT]
    if not refusing:
        return None
    said = "; ".join(
        f"{reason.name} ({reason.detail})" if reason.detail else reason.name
        for result in refusing
        for reason in result.reasons
        if reason.score > 0
    )
    text = "".join(c if " " <= c <= "~" else "?" for c in said)[:300]
    return text or "refused by policy"


class FilterPipeline:
    def __init__(
        self,
        filters: Sequence[Filter],
        *,
        spam_score: float,
        reject_score: float,
        smtp_filters: Sequence[Filter] = (),
    ) -> None:
        self.filters = tuple(filters)
        # The sender checks: they also look at MailToCheck.hosted_domains,
        # which costs a header scan and directory lookups for every mail.
        self.smtp_filters = tuple(smtp_filters)
        if any(f not in self.filters for f in self.smtp_filters):
            raise ValueError("an SMTP-time filter must also be one of the pipeline's filters")
        self.spam_score = spam_score
        self.reject_score = reject_score

    @classmethod
    def from_settings(cls, settings: Settings) -> FilterPipeline:
        """Inbound mail's pipeline: the spam scorers, sender authentication
        (also at SMTP time) and the content filters, as configured."""
        from mailfleet.filters.sender_auth import SenderAuthFilter

        config = settings.filters
        filters = spam_scorers(config)
        smtp_filters: list[Filter] = []
        if config.sender_auth:
            sender_auth = SenderAuthFilter(
                settings.smtp.hostname,
                nameservers=settings.smtp.dns_servers,
                port=settings.smtp.dns_port,
                timeout=settings.smtp.dns_timeout_seconds,
            )
            filters.append(sender_auth)
            smtp_filters.append(sender_auth)
        filters += content_filters(config)
        return cls(
            filters,
            spam_score=config.spam_score,
            reject_score=config.reject_score,
            smtp_filters=smtp_filters,
        )

    @classmethod
    def for_sending(cls, settings: FilterSettings) -> FilterPipeline:
        """What a user's own send passes before anything is stored: the
        content filters (viruses, blocked attachments: refused) and the spam
        scorers (the built-in rules, rspamd: spam counts against the
        account, delivery/abuse.py, and files a hosted recipient's copy in
        Junk). Sender authentication has nothing to check on mail we sign."""
        return cls(
            [*spam_scorers(settings), *content_filters(settings)],
            spam_score=settings.spam_score,
            reject_score=settings.reject_score,
        )

    def checks_senders(self, prior: Mapping[str, FilterResult] | None = None) -> bool:
        """Whether a sender check is still to run (not in ``prior``): it
        needs the hosted domains among the mail's senders."""
        return any(f.name not in (prior or {}) for f in self.smtp_filters)

    async def close(self) -> None:
        """Lets go of what the filters hold (connections to their services)."""
        for f in self.filters:
            close = getattr(f, "close", None)
            if close is not None:
                await close()

    async def check_at_smtp(self, mail: MailToCheck) -> dict[str, FilterResult]:
        """The SMTP-time filters' results by filter name (``refusal`` says
        whether to refuse; ``run`` takes them as ``prior``). Raises
        FilterUnavailable as ``run`` does."""
        results = await asyncio.gather(*(f.check(mail) for f in self.smtp_filters))
        return {f.name: r for f, r in zip(self.smtp_filters, results, strict=True)}

    async def run(
        self, mail: MailToCheck, prior: Mapping[str, FilterResult] | None = None
    ) -> Outcome:
        """Raises FilterUnavailable when a filter cannot answer now. A filter
        named in ``prior`` (checked at SMTP time) is not asked again."""
        prior = prior or {}

        async def check(f: Filter) -> FilterResult:
            found = prior.get(f.name)
            return found if found is not None else await f.check(mail)

        results: list[FilterResult] = list(await asyncio.gather(*map(check, self.filters)))
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


def spam_scorers(settings: FilterSettings) -> list[Filter]:
    """The filters that score how a mail reads: the built-in rules and
    rspamd, as configured."""
    from mailfleet.filters.rspamd import RspamdFilter
    from mailfleet.filters.rules import BuiltinRules

    filters: list[Filter] = [BuiltinRules()] if settings.builtin_rules else []
    if settings.rspamd_url:
        filters.append(
            RspamdFilter(
                settings.rspamd_url,
                timeout=settings.rspamd_timeout_seconds,
                password=settings.rspamd_password,
            )
        )
    return filters


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
