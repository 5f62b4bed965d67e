"""Sender authentication of inbound mail (issue 13): SPF, DKIM, DMARC and ARC
checked for a mail that came over the MX (``direction == "in"``), reported in
one ``Authentication-Results`` header field (RFC 8601), scored, and turned
into a verdict where the sender's domain asks for one.

- SPF (RFC 7208) by pyspf, for the MAIL FROM domain, or the HELO name when
  MAIL FROM is empty (section 2.4), and the client's address.
- DKIM (RFC 6376) by dkimpy: every DKIM-Signature is verified and reported
  with its d=, s= and the start of its b= (RFC 6008, to tell two signatures
  of one domain apart). A missing or unusable key, or a malformed signature,
  is ``permerror``; a signature or body hash that does not match, ``fail``.
- DMARC (RFC 7489) by ``mailfleet.proto.dmarc``: the From domain's
  ``_dmarc`` record, else its organizational domain's (last two labels, no
  Public Suffix List), SPF and DKIM alignment per ``aspf``/``adkim``, ``p``
  (``sp`` for a subdomain). ``pct`` is not applied.
- ARC (RFC 8617) by dkimpy's ARC verifier: reported (``arc=pass|fail``) when
  the mail carries ARC headers, never acted on. Letting a trusted forwarder's
  ARC chain override a DMARC failure is a local policy that needs a list of
  trusted sealers; there is none yet.

Verdicts: DMARC fail with ``p=reject`` → REJECT, with ``p=quarantine`` →
SPAM. A From or MAIL FROM on one of our hosted domains that arrives over the
MX is forged unless it passes DMARC (From) or SPF (MAIL FROM) for that
domain: our users send through submission and the API, never through the MX,
so a hosted domain without SPF or DMARC records is no excuse → REJECT
(``FORGED_HOSTED_SENDER``). A temporary failure (DNS timeout, SERVFAIL) is a
``temperror``: reported, scored 0, never a reason to refuse.

DNS: every lookup goes through the resolver the settings configure
(``mailfleet.resolver.build_resolver``). The libraries are blocking, so:
  * DKIM and ARC keys are prefetched with dnspython's asyncio resolver (the
    names are in the signatures: ``s._domainkey.d``), concurrently, and the
    verification then runs in a worker thread with a lookup function that
    only reads the prefetched answers. No thread ever waits on DNS for DKIM,
    and a key lookup's temporary failure is known for what it is (dkimpy turns
    its own DNS errors into a plain "invalid").
  * SPF's lookups depend on the records found (include:, a, mx, macros), so
    they cannot be prefetched: pyspf runs in ``asyncio.to_thread`` with a
    blocking dnspython resolver on the same servers. pyspf has no per-query
    DNS hook, only the module-level ``spf.DNSLookup``; it is replaced once by
    a function that asks the resolver this thread's context names (a
    ContextVar, which ``to_thread`` carries into the worker thread) and falls
    back to pyspf's own lookup elsewhere. pyspf's ``querytime`` bounds the
    whole SPF evaluation (RFC 7208 section 4.6.4), so a thread is held for at
    most that long.
  * DMARC records are looked up with the asyncio resolver directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import cachetools
import dkim
import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf

from mailfleet.filters import VERDICT_ORDER, FilterResult, MailToCheck, Reason, Verdict
from mailfleet.proto import dmarc
from mailfleet.proto.addresses import read_address_list
from mailfleet.proto.authres import MethodResult, authentication_results
from mailfleet.resolver import build_resolver, describe_failure

__all__ = [
    "DEFAULT_SCORES",
    "ArcOutcome",
    "DkimOutcome",
    "DmarcOutcome",
    "SenderAuthFilter",
    "SpfOutcome",
    "authentication_results_value",
    "author_domains",
]

# What each reason adds to the score: negative for passes, positive for
# failures (rspamd's defaults are of the same order). REJECT and SPAM verdicts
# do not depend on these.
DEFAULT_SCORES: Final[Mapping[str, float]] = {
    "SPF_PASS": -0.5,
    "SPF_FAIL": 3.0,
    "SPF_SOFTFAIL": 1.5,
    "SPF_PERMERROR": 0.5,
    "SPF_TEMPERROR": 0.0,
    "DKIM_VALID": -1.0,
    "DKIM_INVALID": 1.0,
    "DKIM_TEMPERROR": 0.0,
    "DMARC_PASS": -1.0,
    "DMARC_POLICY_NONE": 1.0,
    "DMARC_POLICY_QUARANTINE": 5.0,
    "DMARC_POLICY_REJECT": 10.0,
    "DMARC_TEMPERROR": 0.0,
    "FORGED_HOSTED_SENDER": 10.0,
}

# Signature headers whose keys are prefetched (DKIM, and ARC's two signed ones).
_SIGNED_HEADERS = (b"dkim-signature", b"arc-message-signature", b"arc-seal")
_ARC_HEADERS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")

DkimResult = Literal["pass", "fail", "neutral", "temperror", "permerror"]


# -- DNS -----------------------------------------------------------------------


class _TempFailure:
    """A prefetched lookup that failed temporarily."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


async def _txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[bytes] | _TempFailure:
    """The TXT values at ``name`` (each one's strings joined); [] when the
    name or the type does not exist."""
    try:
        qname = dns.name.from_text(name, origin=dns.name.root)
        answer = await resolver.resolve(qname, dns.rdatatype.TXT, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
        return []  # not a name: nothing published there
    except dns.exception.DNSException as exc:
        return _TempFailure(f"DNS {describe_failure(exc)}")
    return [b"".join(rdata.strings) for rdata in answer]


_spf_resolver: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "mailfleet_spf_resolver", default=None
)
_pyspf_lookup: Callable[..., Any] = spf.DNSLookup


def _spf_dns_lookup(
    name: str, qtype: str, strict: object = True, timeout: float = 20
) -> list[tuple[tuple[str, str], object]]:
    """pyspf's lookup interface: [((name, type), value)], TXT values as lists
    of byte strings, MX as (preference, exchange); no data is []; a failure
    raises ``spf.TempError``."""
    resolver = _spf_resolver.get()
    if resolver is None:  # someone else's pyspf query: pyspf's own lookup
        result: list[tuple[tuple[str, str], object]] = _pyspf_lookup(name, qtype, strict, timeout)
        return result
    try:
        answer = resolver.resolve(
            name, qtype, search=False, lifetime=min(timeout, resolver.lifetime)
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {describe_failure(exc)}") from None
    found: list[tuple[tuple[str, str], object]] = []
    for rdata in answer:
        value: object
        if qtype in ("A", "AAAA"):
            value = rdata.address
        elif qtype == "MX":
            value = (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
        elif qtype == "PTR":
            value = rdata.target.to_text(omit_final_dot=True)
        elif qtype in ("TXT", "SPF"):
            value = list(rdata.strings)
        else:
            continue
        found.append(((name, qtype), value))
    return found


spf.DNSLookup = _spf_dns_lookup


# -- the checks, as data -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    result: str  # pass fail softfail neutral none temperror permerror
    identity: Literal["mailfrom", "helo"]
    domain: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    result: DkimResult
    domain: str  # d=, "" when the signature has none
    selector: str
    b_prefix: str  # first characters of b= (RFC 6008 header.b)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    result: dmarc.DmarcResult
    from_domain: str  # "" when there is no single one
    policy: dmarc.Policy | None = None  # the policy that applies (p, or sp)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ArcOutcome:
    result: str  # pass fail none
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Signature:
    header: bytes  # lower case
    tags: Mapping[bytes, bytes]

    @property
    def key_name(self) -> bytes | None:
        d, s = self.tags.get(b"d"), self.tags.get(b"s")
        if not d or not s:
            return None
        return s.strip() + b"._domainkey." + d.strip() + b"."


def _split_head(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[: end + len(sep)]
    return raw + b"\r\n\r\n"


def _signatures(head: bytes) -> list[_Signature]:
    try:
        headers, _ = dkim.rfc822_parse(head)
    except Exception:  # dkimpy's parser: a head it cannot read has no signatures we can use
        return []
    found = []
    for name, value in headers:
        lname = name.lower()
        if lname in _SIGNED_HEADERS:
            try:
                tags = dkim.util.parse_tag_value(value)
            except Exception:
                tags = {}
            found.append(_Signature(lname, tags))
    return found


def _b_prefix(tags: Mapping[bytes, bytes]) -> str:
    b = re.sub(rb"\s+", b"", tags.get(b"b", b""))
    return b[:8].decode("ascii", "replace")


def _ascii(value: bytes | None) -> str:
    return (value or b"").strip().decode("ascii", "replace").lower()


def _verify_dkim(
    raw: bytes,
    signatures: Sequence[_Signature],
    keys: Mapping[bytes, list[bytes] | _TempFailure],
    check_arc: bool,
) -> tuple[list[DkimOutcome], ArcOutcome | None]:
    """Blocking: every DKIM signature verified (and the ARC chain, when
    ``check_arc``), with keys only from ``keys``."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        found = keys.get(name if name.endswith(b".") else name + b".")
        if not isinstance(found, list) or not found:
            return None
        with_key = [txt for txt in found if b"p=" in txt]
        return (with_key or found)[0]

    outcomes: list[DkimOutcome] = []
    dkim_signatures = [s for s in signatures if s.header == b"dkim-signature"]
    verifier = dkim.DKIM(raw)
    for idx, sig in enumerate(dkim_signatures):
        domain, selector = _ascii(sig.tags.get(b"d")), _ascii(sig.tags.get(b"s"))
        b_prefix = _b_prefix(sig.tags)

        def outcome(result: DkimResult, detail: str) -> DkimOutcome:
            return DkimOutcome(result, domain, selector, b_prefix, detail)  # noqa: B023

        key_name = sig.key_name
        key = keys.get(key_name) if key_name is not None else None
        if isinstance(key, _TempFailure):
            outcomes.append(outcome("temperror", f"key lookup: {key.detail}"))
            continue
        if key_name is not None and not key:
            outcomes.append(outcome("permerror", "no key published"))
            continue
        try:
            valid = verifier.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.ValidationError as exc:  # body hash mismatch, bad tags
            if "body hash" in str(exc):
                outcomes.append(outcome("fail", "body hash mismatch"))
            else:
                outcomes.append(outcome("permerror", str(exc)[:100]))
            continue
        except dkim.DKIMException as exc:  # malformed signature or key
            outcomes.append(outcome("permerror", str(exc)[:100]))
            continue
        except Exception as exc:  # dkimpy on input it did not foresee
            outcomes.append(outcome("permerror", type(exc).__name__))
            continue
        outcomes.append(outcome("pass", "") if valid else outcome("fail", "signature mismatch"))

    arc: ArcOutcome | None = None
    if check_arc:
        try:
            cv, _, reason = dkim.arc_verify(raw, dnsfunc=dnsfunc)
        except Exception as exc:  # dkimpy on input it did not foresee
            arc = ArcOutcome("fail", type(exc).__name__)
        else:
            # cv is None when an earlier hop reported the chain failed.
            chain = cv.decode("ascii").lower() if isinstance(cv, bytes) else "fail"
            arc = ArcOutcome(chain, "" if chain == "pass" else str(reason)[:100])
    return outcomes, arc


def _check_spf(
    resolver: dns.resolver.Resolver,
    client_ip: str,
    mail_from: str,
    helo: str,
    time_limit: float,
) -> tuple[str, str]:
    """Blocking: (result, explanation) of pyspf for this client."""
    _spf_resolver.set(resolver)  # this worker thread's own context copy
    try:
        query = spf.query(
            i=client_ip,
            s=mail_from,
            h=helo,
            timeout=resolver.lifetime,
            querytime=time_limit,
        )
        result, _code, explanation = query.check()
    except Exception as exc:  # pyspf on input it did not foresee (a bad address)
        return "permerror", type(exc).__name__
    return str(result), str(explanation)


# A From field and its continuation lines, at the start of a header line.
_FROM_FIELD = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _from_domains(head: bytes) -> tuple[list[str], int]:
    """The domains of the From header field's addresses (RFC5322.From), and
    how many From fields there are. A scan of the header lines, not a parse:
    it runs at SMTP time for every mail (email.parser cost ten times more)."""
    fields = [m.group(1) for m in _FROM_FIELD.finditer(head)]
    domains: list[str] = []
    for value in fields:
        text = re.sub(rb"\r?\n(?=[ \t])", b"", value).decode("utf-8", "replace")
        addresses, _ = read_address_list(text)
        for address in addresses:
            domain = address.email.rpartition("@")[2].lower().rstrip(".")
            if domain and domain not in domains:
                domains.append(domain)
    return domains, len(fields)


def author_domains(raw: bytes) -> list[str]:
    """The domains of a mail's From field (a header-only parse)."""
    return _from_domains(_split_head(raw))[0]


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip("<>").lower().rstrip(".")


# -- the filter ----------------------------------------------------------------


class SenderAuthFilter:
    """SPF, DKIM, DMARC (and ARC, reported) for inbound mail. ``authserv_id``
    names this host in Authentication-Results (the MX host name);
    ``nameservers``/``port``/``timeout`` as ``smtp.dns_servers``,
    ``smtp.dns_port`` and ``smtp.dns_timeout_seconds``; ``scores`` overrides
    entries of ``DEFAULT_SCORES``; ``spf_time_limit`` bounds one whole SPF
    evaluation (RFC 7208 section 4.6.4: at least 20 seconds)."""

    name = "sender_auth"

    def __init__(
        self,
        authserv_id: str,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 10.0,
        scores: Mapping[str, float] | None = None,
        spf_time_limit: float = 20.0,
        dns_cache_size: int = 50_000,
        spf_cache_seconds: float = 60.0,
    ) -> None:
        self.authserv_id = authserv_id
        # One cache for both: SPF's blocking lookups and the asyncio ones
        # (DKIM keys, DMARC records) often ask the same names.
        cache = dns.resolver.LRUCache(dns_cache_size) if dns_cache_size else None
        self._resolver = build_resolver(
            dns.asyncresolver.Resolver,
            nameservers=nameservers,
            port=port,
            timeout=timeout,
            cache=cache,
        )
        self._sync_resolver = build_resolver(
            dns.resolver.Resolver, nameservers=nameservers, port=port, timeout=timeout, cache=cache
        )
        # Read and written on the event loop only: no lock.
        self._spf_results: cachetools.TTLCache[tuple[str, str, str], tuple[str, str]] = (
            cachetools.TTLCache(maxsize=max(1, dns_cache_size), ttl=spf_cache_seconds)
        )
        unknown = set(scores or ()) - set(DEFAULT_SCORES)
        if unknown:
            raise ValueError(f"unknown sender_auth scores: {', '.join(sorted(unknown))}")
        self.scores = {**DEFAULT_SCORES, **(scores or {})}
        self._spf_time_limit = spf_time_limit

    async def check(self, mail: MailToCheck) -> FilterResult:
        if mail.direction != "in":
            return FilterResult()
        head = _split_head(mail.raw)
        from_domains, from_fields = _from_domains(head)
        # The policy record is looked up while SPF and DKIM are checked.
        spf_outcome, (dkim_outcomes, arc), policy = await asyncio.gather(
            self._spf(mail), self._dkim(mail.raw, head), self._dmarc_policy(from_domains)
        )
        dmarc_outcome = _dmarc_outcome(
            from_domains, from_fields, policy, spf_outcome, dkim_outcomes
        )
        reasons, verdict = self._decide(
            mail, spf_outcome, dkim_outcomes, dmarc_outcome, from_domains
        )
        header = authentication_results_value(
            self.authserv_id, spf_outcome, dkim_outcomes, dmarc_outcome, arc
        )
        return FilterResult(
            score=round(sum(r.score for r in reasons), 3),
            reasons=tuple(reasons),
            verdict=verdict,
            headers=(("Authentication-Results", header),),
        )

    # -- checks

    async def _spf(self, mail: MailToCheck) -> SpfOutcome:
        mail_from = mail.mail_from.strip().strip("<>")
        identity: Literal["mailfrom", "helo"] = "mailfrom" if mail_from else "helo"
        domain = _domain_of(mail_from) if mail_from else mail.helo.strip().lower().rstrip(".")
        if not mail.client_ip:
            return SpfOutcome("none", identity, domain, "no client address")
        if not domain:
            return SpfOutcome("none", identity, domain, "no domain to check")
        # The same sender from the same address is judged the same way while
        # its records stand: evaluating SPF again (in a thread, tens of
        # Python-level lookups through the DNS cache) is what a busy MX
        # would spend most of its SMTP-time checks on.
        key = (mail.client_ip, mail_from.lower(), mail.helo.lower())
        cached = self._spf_results.get(key)
        if cached is not None:
            result, explanation = cached
        else:
            result, explanation = await asyncio.to_thread(
                _check_spf,
                self._sync_resolver,
                mail.client_ip,
                mail_from,
                mail.helo,
                self._spf_time_limit,
            )
            if result != "temperror":
                self._spf_results[key] = (result, explanation)
        return SpfOutcome(result, identity, domain, explanation)

    async def _dkim(self, raw: bytes, head: bytes) -> tuple[list[DkimOutcome], ArcOutcome | None]:
        signatures = _signatures(head)
        if not signatures:
            return [], None
        names = sorted({n for n in (s.key_name for s in signatures) if n is not None})
        answers = await asyncio.gather(
            *(self._txt(name.decode("ascii", "replace")) for name in names)
        )
        keys = dict(zip(names, answers, strict=True))
        check_arc = any(s.header in _ARC_HEADERS for s in signatures)
        return await asyncio.to_thread(_verify_dkim, raw, signatures, keys, check_arc)

    async def _txt(self, name: str) -> list[bytes] | _TempFailure:
        return await _txt(self._resolver, name)

    async def _dmarc_policy(
        self, from_domains: Sequence[str]
    ) -> tuple[dmarc.DmarcRecord | _TempFailure | None, str]:
        """(the record, where it was found) for a single From domain: its own
        ``_dmarc`` record, else its organizational domain's (RFC 7489
        section 6.6.3)."""
        if len(from_domains) != 1:
            return None, ""
        from_domain = from_domains[0]
        found = await self._dmarc_record(from_domain)
        org = dmarc.organizational_domain(from_domain)
        if found is None and org != from_domain:
            return await self._dmarc_record(org), org
        return found, from_domain

    async def _dmarc_record(self, domain: str) -> dmarc.DmarcRecord | _TempFailure | None:
        answer = await self._txt(f"_dmarc.{domain}")
        if isinstance(answer, _TempFailure):
            return answer
        return dmarc.select_record(txt.decode("utf-8", "replace") for txt in answer)

    # -- decisions

    def _reason(self, name: str, detail: str = "") -> Reason:
        return Reason(name, self.scores[name], detail)

    def _decide(
        self,
        mail: MailToCheck,
        spf_outcome: SpfOutcome,
        dkim_outcomes: Sequence[DkimOutcome],
        dmarc_outcome: DmarcOutcome,
        from_domains: Sequence[str],
    ) -> tuple[list[Reason], Verdict | None]:
        reasons: list[Reason] = []
        verdicts: list[Verdict] = []

        spf_reason = _SPF_REASONS.get(spf_outcome.result)
        if spf_reason:
            reasons.append(self._reason(spf_reason, f"{spf_outcome.domain}: {spf_outcome.detail}"))

        passed = [d.domain for d in dkim_outcomes if d.result == "pass"]
        if passed:
            reasons.append(self._reason("DKIM_VALID", ", ".join(passed)))
        failed = [d.domain for d in dkim_outcomes if d.result in ("fail", "permerror")]
        if failed:
            reasons.append(self._reason("DKIM_INVALID", ", ".join(failed)))
        if any(d.result == "temperror" for d in dkim_outcomes):
            reasons.append(self._reason("DKIM_TEMPERROR"))

        domain = dmarc_outcome.from_domain
        if dmarc_outcome.result == "pass":
            reasons.append(self._reason("DMARC_PASS", domain))
        elif dmarc_outcome.result == "temperror":
            reasons.append(self._reason("DMARC_TEMPERROR", dmarc_outcome.detail or domain))
        elif dmarc_outcome.result == "fail":
            if dmarc_outcome.policy == "reject":
                reasons.append(self._reason("DMARC_POLICY_REJECT", domain))
                verdicts.append(Verdict.REJECT)
            elif dmarc_outcome.policy == "quarantine":
                reasons.append(self._reason("DMARC_POLICY_QUARANTINE", domain))
                verdicts.append(Verdict.SPAM)
            else:
                reasons.append(self._reason("DMARC_POLICY_NONE", domain))

        # Our own domains never come over the MX: whatever claims one must
        # prove it, and a hosted domain without records cannot. A temporary
        # failure proves nothing either way and refuses nothing.
        hosted = {d.lower().rstrip(".") for d in mail.hosted_domains}
        forged: list[str] = []
        from_hosted = [d for d in from_domains if d in hosted]
        if from_hosted and dmarc_outcome.result not in ("pass", "temperror"):
            forged.append(f"From {', '.join(from_hosted)} (dmarc={dmarc_outcome.result})")
        if (
            spf_outcome.identity == "mailfrom"
            and spf_outcome.domain in hosted
            and spf_outcome.result not in ("pass", "temperror")
        ):
            forged.append(f"MAIL FROM {spf_outcome.domain} (spf={spf_outcome.result})")
        if forged:
            reasons.append(self._reason("FORGED_HOSTED_SENDER", "; ".join(forged)))
            verdicts.append(Verdict.REJECT)
        verdict = max(verdicts, key=VERDICT_ORDER.index) if verdicts else None
        return reasons, verdict


def _dmarc_outcome(
    from_domains: Sequence[str],
    from_fields: int,
    policy: tuple[dmarc.DmarcRecord | _TempFailure | None, str],
    spf_outcome: SpfOutcome,
    dkim_outcomes: Iterable[DkimOutcome],
) -> DmarcOutcome:
    if from_fields != 1 or len(from_domains) != 1:
        # RFC 7489 section 6.6.1: no single author domain to check.
        return DmarcOutcome(
            "permerror",
            from_domains[0] if len(from_domains) == 1 else "",
            detail=f"{from_fields} From fields, {len(from_domains)} author domains",
        )
    from_domain = from_domains[0]
    found, record_domain = policy
    if isinstance(found, _TempFailure):
        return DmarcOutcome("temperror", from_domain, detail=found.detail)
    dkim_list = list(dkim_outcomes)
    evaluation = dmarc.evaluate(
        found,
        from_domain=from_domain,
        record_domain=record_domain,
        spf_result=spf_outcome.result,
        spf_domain=spf_outcome.domain,
        dkim_passes=[d.domain for d in dkim_list if d.result == "pass"],
        auth_temperror=spf_outcome.result == "temperror"
        or any(d.result == "temperror" for d in dkim_list),
    )
    return DmarcOutcome(evaluation.result, from_domain, evaluation.policy)


_SPF_REASONS = {
    "pass": "SPF_PASS",
    "fail": "SPF_FAIL",
    "softfail": "SPF_SOFTFAIL",
    "permerror": "SPF_PERMERROR",
    "temperror": "SPF_TEMPERROR",
}


def authentication_results_value(
    authserv_id: str,
    spf_outcome: SpfOutcome,
    dkim_outcomes: Iterable[DkimOutcome],
    dmarc_outcome: DmarcOutcome,
    arc: ArcOutcome | None = None,
) -> str:
    """The Authentication-Results value (RFC 8601) for these outcomes: spf,
    one dkim per signature, dmarc, and arc when the mail had ARC headers."""
    spf_props = (
        ((f"smtp.{spf_outcome.identity}", spf_outcome.domain),) if spf_outcome.domain else ()
    )
    spf_reason = "" if spf_outcome.result == "pass" else spf_outcome.detail
    results = [MethodResult("spf", spf_outcome.result, spf_props, spf_reason[:100])]
    for d in dkim_outcomes:
        props = (("header.d", d.domain), ("header.s", d.selector), ("header.b", d.b_prefix))
        results.append(
            MethodResult("dkim", d.result, tuple((k, v) for k, v in props if v), d.detail)
        )
    dmarc_props = (("header.from", dmarc_outcome.from_domain),) if dmarc_outcome.from_domain else ()
    dmarc_reason = dmarc_outcome.detail
    if dmarc_outcome.result == "fail" and dmarc_outcome.policy:
        dmarc_reason = f"p={dmarc_outcome.policy}"
    results.append(MethodResult("dmarc", dmarc_outcome.result, dmarc_props, dmarc_reason))
    if arc is not None:
        results.append(MethodResult("arc", arc.result, (), arc.detail))
    return authentication_results(authserv_id, results)
