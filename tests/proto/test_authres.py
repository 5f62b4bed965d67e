"""Authentication-Results (RFC 8601) formatting (proto/authres.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.proto.authres import MethodResult, authentication_results, remove_claims_of


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


def test_a_claim_of_ours_is_removed_and_the_rest_kept_byte_for_byte() -> None:
    raw = (
        b"Received: from a by b\r\n"
        b"Authentication-Results: MX.Ours.Test;\r\n\tdkim=pass header.d=bank.test\r\n"
        b"Authentication-Results: relay.other.test; spf=none\r\n"
        b"authentication-results: (comment) mx.ours.test 1; spf=pass\r\n"
        b"From: a@b.test\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; in the body, not a field\r\n"
    )
    assert remove_claims_of(raw, "mx.ours.test") == (
        b"Received: from a by b\r\n"
        b"Authentication-Results: relay.other.test; spf=none\r\n"
        b"From: a@b.test\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; in the body, not a field\r\n"
    )


def test_a_mail_without_a_claim_is_returned_as_it_is() -> None:
    raw = b"From: a@b.test\r\nAuthentication-Results: other.test; none\r\n\r\nbody\r\n"
    assert remove_claims_of(raw, "mx.ours.test") is raw
    assert remove_claims_of(b"no header at all", "x") == b"no header at all"


def test_a_head_of_only_claims_keeps_its_blank_line() -> None:
    raw = b"Authentication-Results: mx.ours.test; none\n\nbody\n"
    assert remove_claims_of(raw, "mx.ours.test") == b"\nbody\n"


@given(st.lists(st.sampled_from(["ours", "theirs", "other"]), max_size=8), st.binary(max_size=40))
def test_only_our_claims_go(fields: list[str], body: bytes) -> None:
    lines = {
        "ours": b"Authentication-Results: mx.ours.test; spf=pass\r\n",
        "theirs": b"Authentication-Results: mx.ours.test.evil; spf=pass\r\n",
        "other": b"Subject: hi\r\n",
    }
    raw = b"".join(lines[f] for f in fields) + b"From: a@b.test\r\n\r\n" + body
    expected = b"".join(lines[f] for f in fields if f != "ours") + b"From: a@b.test\r\n\r\n" + body
    assert remove_claims_of(raw, "mx.ours.test") == expected
