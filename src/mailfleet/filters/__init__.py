"""Filters every mail passes before anyone sees it (issue 13): inbound in
worker-in (and at SMTP time where a refusal can still be said), local in the
send flow, outbound in worker-out.

A filter looks at one mail and answers a ``FilterResult``: a score, the
reasons for it, optionally a verdict of its own (GTUBE, a DMARC reject, a
virus) and headers for the stored copy (``Authentication-Results``). The
pipeline (``filters/pipeline.py``) adds the scores, takes the strongest
verdict, and turns the total into one against the deployment's thresholds.
A filter that cannot answer (a scanner down) raises ``FilterUnavailable``:
the mail waits and is tried again, never delivered unscanned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Protocol

from mailfleet.proto.mime.message import ParsedMessage, parse_message


class Verdict(StrEnum):
    """Weakest to strongest: the pipeline keeps the strongest any filter gave."""

    HAM = "ham"  # the folder it was meant for
    SPAM = "spam"  # Junk
    QUARANTINE = "quarantine"  # kept, in no folder (viruses)
    REJECT = "reject"  # refused at SMTP when it can still be; else Junk


VERDICT_ORDER = (Verdict.HAM, Verdict.SPAM, Verdict.QUARANTINE, Verdict.REJECT)


@dataclass(frozen=True)
class Reason:
    """One rule that fired: ``name`` like ``GTUBE`` or ``DMARC_POLICY_REJECT``
    (upper case, as rspamd's symbols), what it added to the score, and a
    short human detail."""

    name: str
    score: float
    detail: str = ""


@dataclass(frozen=True)
class FilterResult:
    score: float = 0.0
    reasons: tuple[Reason, ...] = ()
    verdict: Verdict | None = None  # None: no opinion beyond the score
    headers: tuple[tuple[str, str], ...] = ()  # prepended to the stored copy

    def to_json(self) -> dict[str, Any]:
        """For a queue payload: smtp-in's checks, reused by worker-in."""
        return {
            "score": self.score,
            "reasons": [[r.name, r.score, r.detail] for r in self.reasons],
            "verdict": self.verdict.value if self.verdict else None,
            "headers": [list(h) for h in self.headers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilterResult:
        verdict = data.get("verdict")
        return cls(
            score=float(data["score"]),
            reasons=tuple(Reason(str(n), float(s), str(d)) for n, s, d in data["reasons"]),
            verdict=Verdict(verdict) if verdict else None,
            headers=tuple((str(n), str(v)) for n, v in data["headers"]),
        )


@dataclass(frozen=True)
class MailToCheck:
    """What a filter may look at. ``direction``: ``in`` over SMTP from
    outside, ``local`` from one of our users to another, ``out`` to the
    Internet. ``client_ip``/``helo`` are the connecting client's (inbound).
    ``hosted_domains``: those of the From and MAIL FROM domains that we host.
    ``parsed`` is parsed from ``raw`` when first asked for, unless given as
    ``parsed_message``: at SMTP time only the checks that need no parse run."""

    raw: bytes
    mail_from: str
    recipients: tuple[str, ...]
    direction: Literal["in", "local", "out"]
    client_ip: str = ""
    helo: str = ""
    hosted_domains: frozenset[str] = field(default_factory=frozenset)
    parsed_message: ParsedMessage | None = field(default=None, repr=False, compare=False)

    @cached_property
    def parsed(self) -> ParsedMessage:
        return self.parsed_message or parse_message(self.raw)


class FilterUnavailable(Exception):
    """The filter could not answer now (its service is down or slow): the
    mail must wait and be tried again."""


class Filter(Protocol):
    name: str

    async def check(self, mail: MailToCheck) -> FilterResult: ...
