"""DMARC's pure parts (proto/dmarc.py): the record, alignment, evaluation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailfleet.proto.dmarc import (
    DmarcRecord,
    aligned,
    evaluate,
    organizational_domain,
    parse_record,
    parse_tags,
    select_record,
)


def test_a_full_record_is_read() -> None:
    record = parse_record("v=DMARC1; p=Reject; sp=quarantine; adkim=s; aspf=s; pct=50; rua=x")
    assert record == DmarcRecord(p="reject", sp="quarantine", adkim="s", aspf="s", pct=50)


def test_defaults_and_bad_values() -> None:
    assert parse_record("v=DMARC1") == DmarcRecord()
    assert parse_record("v=DMARC1; p=bogus; adkim=x; pct=-3") == DmarcRecord()
    assert parse_record("v=DMARC1;p=quarantine;pct=250") == DmarcRecord(p="quarantine")


def test_only_records_opening_with_the_version_count() -> None:
    assert parse_record("p=reject; v=DMARC1") is None
    assert parse_record("v=spf1 -all") is None
    assert parse_record("v=DMARC2; p=reject") is None
    assert parse_record(" v = DMARC1 ; p = reject ") == DmarcRecord(p="reject")


def test_several_records_mean_none() -> None:
    one = "v=DMARC1; p=reject"
    assert select_record(["v=spf1 -all", one]) == DmarcRecord(p="reject")
    assert select_record([one, "v=DMARC1; p=none"]) is None
    assert select_record([]) is None


@given(st.text())
def test_tag_parsing_never_raises(text: str) -> None:
    tags = parse_tags(text)
    assert all(name == name.strip().lower() for name in tags)
    parse_record(text)
    parse_record("v=DMARC1;" + text)


def test_organizational_domain_is_the_last_two_labels() -> None:
    assert organizational_domain("a.b.Example.test.") == "example.test"
    assert organizational_domain("example.test") == "example.test"
    assert organizational_domain("test") == "test"


def test_alignment() -> None:
    assert aligned("mail.example.test", "example.test", "r")
    assert aligned("example.test", "news.example.test", "r")
    assert not aligned("mail.example.test", "example.test", "s")
    assert aligned("Example.test.", "example.test", "s")
    assert not aligned("example.org", "example.test", "r")
    assert not aligned("", "example.test", "r")


def test_evaluation() -> None:
    record = DmarcRecord(p="reject", sp="quarantine")
    common = {"from_domain": "example.test", "record_domain": "example.test"}
    spf_pass = evaluate(
        record, **common, spf_result="pass", spf_domain="bounce.example.test", dkim_passes=[]
    )
    assert (spf_pass.result, spf_pass.spf_aligned, spf_pass.dkim_aligned) == ("pass", True, False)
    fail = evaluate(
        record, **common, spf_result="fail", spf_domain="x.test", dkim_passes=["y.test"]
    )
    assert (fail.result, fail.policy) == ("fail", "reject")
    temp = evaluate(
        record,
        **common,
        spf_result="temperror",
        spf_domain="x.test",
        dkim_passes=[],
        auth_temperror=True,
    )
    assert temp.result == "temperror"
    sub = evaluate(
        record,
        from_domain="news.example.test",
        record_domain="example.test",
        spf_result="none",
        spf_domain="",
        dkim_passes=[],
    )
    assert (sub.result, sub.policy) == ("fail", "quarantine")
    assert evaluate(None, **common, spf_result="pass", spf_domain="", dkim_passes=[]).result == (
        "none"
    )
