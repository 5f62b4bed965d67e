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

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from mailfleet.proto.mime.message import ParsedMessage


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


@dataclass(frozen=True)
class MailToCheck:
    """What a filter may look at. ``direction``: ``in`` over SMTP from
    outside, ``local`` from one of our users to another, ``out`` to the
    Internet. ``client_ip``/``helo`` are the connecting client's (inbound)."""

    raw: bytes
    parsed: ParsedMessage
    mail_from: str
    recipients: tuple[str, ...]
    direction: Literal["in", "local", "out"]
    client_ip: str = ""
    helo: str = ""
    hosted_domains: frozenset[str] = field(default_factory=frozenset)


class FilterUnavailable(Exception):
    """The filter could not answer now (its service is down or slow): the
    mail must wait and be tried again."""


class Filter(Protocol):
    name: str

    async def check(self, mail: MailToCheck) -> FilterResult: ...
