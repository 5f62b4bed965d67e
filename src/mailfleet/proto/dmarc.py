"""DMARC (RFC 7489) as pure functions: the policy record, the organizational
domain, identifier alignment and the evaluation of one message. No I/O: the
caller looks the records up and passes in the SPF and DKIM results.

- Record (section 6.3, 6.4): tag=value pairs separated by ";", ``v=DMARC1``
  first. Unknown tags are ignored, bad values take the default (section 6.6.3:
  a record whose ``p`` is missing or invalid is still a record, applied as
  ``p=none``). ``pct`` is parsed but not applied by mailfleet: a policy
  applies to every failing message (a sampling rate only eases a domain's
  roll-out, and deterministic verdicts are easier to explain).
- Organizational domain (section 3.2): the Public Suffix List is not used;
  the last two labels stand in for it. That is wrong under multi-label public
  suffixes (``a.example.co.uk`` → ``co.uk``), which only matters for the
  fallback lookup and relaxed alignment of such domains.
- Alignment (section 3.1): strict means the same domain, relaxed the same
  organizational domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Policy = Literal["none", "quarantine", "reject"]
AlignmentMode = Literal["r", "s"]
_POLICIES: tuple[Policy, ...] = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed ``_dmarc`` TXT record (RFC 7489 section 6.3)."""

    p: Policy = "none"
    sp: Policy | None = None  # None: as p
    adkim: AlignmentMode = "r"
    aspf: AlignmentMode = "r"
    pct: int = 100  # parsed, not applied (see the module docstring)


def parse_tags(text: str) -> dict[str, str]:
    """``tag=value; tag=value`` → {tag (lower case): value (stripped)}. The
    first occurrence of a tag wins; pieces without "=" are skipped. Never
    raises."""
    tags: dict[str, str] = {}
    for piece in text.split(";"):
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if eq and name and name not in tags:
            tags[name] = value.strip()
    return tags


def parse_record(text: str) -> DmarcRecord | None:
    """The record in one TXT value, or None when it is no DMARC record (it
    must open with ``v=DMARC1``, section 6.4). Never raises."""
    version = text.partition(";")[0]
    name, eq, value = version.partition("=")
    if not eq or name.strip().lower() != "v" or value.strip() != "DMARC1":
        return None
    tags = parse_tags(text)
    p = _policy(tags.get("p")) or "none"
    return DmarcRecord(
        p=p,
        sp=_policy(tags.get("sp")),
        adkim=_mode(tags.get("adkim")),
        aspf=_mode(tags.get("aspf")),
        pct=_pct(tags.get("pct")),
    )


def select_record(texts: Iterable[str]) -> DmarcRecord | None:
    """Section 6.6.3 step 5: of a name's TXT values, those that are DMARC
    records; exactly one is used, none or several mean no policy."""
    records = [r for r in (parse_record(t) for t in texts) if r is not None]
    return records[0] if len(records) == 1 else None


def _policy(value: str | None) -> Policy | None:
    if value is None:
        return None
    for policy in _POLICIES:
        if value.lower() == policy:
            return policy
    return None


def _mode(value: str | None) -> AlignmentMode:
    return "s" if value is not None and value.lower() == "s" else "r"


def _pct(value: str | None) -> int:
    if value is None or not value.isascii() or not value.isdigit():
        return 100
    return min(int(value), 100)


def organizational_domain(domain: str) -> str:
    """The last two labels of ``domain`` (lower case, no final dot): a
    stand-in for the Public Suffix List lookup of section 3.2."""
    labels = [label for label in domain.lower().rstrip(".").split(".") if label]
    return ".".join(labels[-2:])


def aligned(identifier: str, from_domain: str, mode: AlignmentMode) -> bool:
    """Section 3.1: does an authenticated domain (SPF's MAIL FROM domain,
    DKIM's d=) align with the From domain?"""
    a = identifier.lower().rstrip(".")
    b = from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]


@dataclass(frozen=True, slots=True)
class DmarcEvaluation:
    """The outcome for one message: ``result`` as Authentication-Results
    says it, and the policy to apply when it is ``fail``."""

    result: DmarcResult
    policy: Policy | None = None  # the record's p (or sp) when one was found
    spf_aligned: bool = False
    dkim_aligned: bool = False


def evaluate(
    record: DmarcRecord | None,
    *,
    from_domain: str,
    record_domain: str,
    spf_result: str,
    spf_domain: str,
    dkim_passes: Iterable[str],
    auth_temperror: bool = False,
) -> DmarcEvaluation:
    """Section 6.6.2: the message passes when SPF passed for a domain aligned
    with the From domain, or a DKIM signature of an aligned d= verified.

    ``record_domain`` is where the record was found (the From domain, or its
    organizational domain, whose ``sp`` then applies, section 6.3).
    ``auth_temperror``: an SPF or DKIM check failed temporarily; a message
    that does not pass otherwise is then a temperror, not a fail, so that a
    DNS outage never enacts a policy."""
    if record is None:
        return DmarcEvaluation("none")
    policy = record.p
    if record_domain.lower() != from_domain.lower() and record.sp is not None:
        policy = record.sp
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_passes)
    if spf_ok or dkim_ok:
        return DmarcEvaluation("pass", policy, spf_ok, dkim_ok)
    if auth_temperror:
        return DmarcEvaluation("temperror", policy)
    return DmarcEvaluation("fail", policy)
