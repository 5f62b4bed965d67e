"""Authentication-Results (RFC 8601) formatting (proto/authres.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.proto.authres import MethodResult, authentication_results


def test_the_documented_example() -> None:
    value = authentication_results(
        "mx.example.test",
        [
            MethodResult("spf", "pass", (("smtp.mailfrom", "a.test"),)),
            MethodResult("dkim", "pass", (("header.d", "a.test"), ("header.s", "sel"))),
            MethodResult("dmarc", "pass", (("header.from", "a.test"),)),
        ],
    )
    assert value == (
        "mx.example.test; spf=pass smtp.mailfrom=a.test; "
        "dkim=pass header.d=a.test header.s=sel; dmarc=pass header.from=a.test"
    )


def test_no_results_is_none() -> None:
    assert authentication_results("mx.example.test", []) == "mx.example.test; none"


def test_values_that_are_not_tokens_are_quoted() -> None:
    value = authentication_results(
        "mx",
        [
            MethodResult(
                "spf", "fail", (("smtp.mailfrom", "a b;c"), ("smtp.helo", "x@y.test")), 'say "no"'
            )
        ],
    )
    assert value == 'mx; spf=fail reason="say \\"no\\"" smtp.mailfrom="a b;c" smtp.helo=x@y.test'


def test_a_method_that_is_not_a_token_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not a token"):
        authentication_results("mx", [MethodResult("d kim", "pass")])


@given(st.text(), st.text())
def test_no_value_can_break_the_header_field(reason: str, domain: str) -> None:
    value = authentication_results(
        "mx", [MethodResult("dkim", "fail", (("header.d", domain),), reason)]
    )
    assert not any(c in value for c in "\r\n\0")
    assert value.startswith("mx; dkim=fail")
