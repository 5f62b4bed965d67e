"""The ``Authentication-Results`` header field (RFC 8601) as a pure function:
what a receiver found when it checked SPF, DKIM, DMARC and ARC, written once
by the host that checked (the authserv-id names it, section 2.5).

    mx.example.test; spf=pass smtp.mailfrom=a.test;
     dkim=pass header.d=a.test header.s=sel; dmarc=pass header.from=a.test

Values that are not RFC 2045 tokens are written as quoted strings (section
2.2), and so is every reason; CR, LF and other controls are dropped, so no
value can end the header field early.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 2045 token: any ASCII printable but SPACE and tspecials. "@" is a
# tspecial, but section 2.2 allows local-part@domain as a pvalue unquoted;
# "." and "-" are ordinary token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_PVALUE = re.compile(r"(?:[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+@)?[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One ``method=result`` with its reason and properties, e.g.
    ``MethodResult("dkim", "pass", (("header.d", "a.test"),))``."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()
    reason: str = ""


def quote(value: str) -> str:
    """A quoted-string (RFC 5322 section 3.2.4) of ``value``, controls dropped."""
    clean = _CONTROL.sub("", value)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(value: str) -> str:
    return value if _PVALUE.fullmatch(value) else quote(value)


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"not a token: {value!r}")
    return value


def format_method(result: MethodResult) -> str:
    parts = [f"{_token(result.method)}={_token(result.result)}"]
    if result.reason:
        parts.append(f"reason={quote(result.reason)}")
    parts.extend(f"{_token(name)}={_pvalue(value)}" for name, value in result.properties)
    return " ".join(parts)


def authentication_results(authserv_id: str, results: Iterable[MethodResult]) -> str:
    """The header field's value (without the name). No results: ``none``
    (section 2.2: no method was applied)."""
    methods = [format_method(r) for r in results]
    return "; ".join([_token(authserv_id), *(methods or ["none"])])


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^(?=[^ \t\r\n])", re.MULTILINE)
_AUTHSERV_ID = re.compile(rb"\s*(?:\([^)]*\)\s*)*([^\s;()]+)")


def remove_claims_of(raw: bytes, authserv_id: str) -> bytes:
    """``raw`` without the Authentication-Results fields in its header that
    name ``authserv_id``: a mail arriving from outside may carry one claiming
    to be ours, which readers would trust (RFC 8601 section 5: a receiver
    MUST remove or rename such fields). Anything else is returned as it is,
    the same object when there is nothing to remove (the MX's hot path)."""
    end = _HEAD_END.search(raw)
    # The header fields with the last one's line end, without the blank line.
    head = raw[: end.start() + (2 if raw[end.start()] == 13 else 1)] if end else raw
    if b"authentication-results" not in head.lower():
        return raw
    ours = authserv_id.lower().encode()
    kept: list[bytes] = []
    removed = False
    fields = _FIELD_START.split(head)
    for field_bytes in fields:
        name, colon, value = field_bytes.partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            found = _AUTHSERV_ID.match(value)
            if found and found.group(1).lower() == ours:
                removed = True
                continue
        kept.append(field_bytes)
    if not removed:
        return raw
    return b"".join(kept) + raw[len(head) :]
