"""Sender authentication (filters/sender_auth.py) against a real DNS server
(dnsmasq on loopback): SPF, DKIM signatures made here with keys made here,
DMARC policies and alignment, forged hosted senders, and a DNS server that
is gone (temperror, never a refusal)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

import dkim
import pytest

from mailfleet.filters import FilterResult, MailToCheck, Verdict
from mailfleet.filters.sender_auth import SenderAuthFilter
from mailfleet.proto.dkim import generate_key
from mailfleet.proto.mime.message import parse_message
from tests.support.dns import DnsServer

AUTHSERV = "mx.example.test"
GOOD_IP = "192.0.2.10"  # in the SPF records below
OTHER_IP = "198.51.100.99"  # in none of them
EVIL_IP = "198.51.100.7"


@pytest.fixture(scope="module")
def key_a() -> tuple[bytes, str]:
    return generate_key()


@pytest.fixture(scope="module")
def key_b() -> tuple[bytes, str]:
    return generate_key()


def dkim_record(public_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_b64}"


@pytest.fixture(scope="module")
def nameserver(key_a: tuple[bytes, str]) -> Iterator[DnsServer]:
    server = DnsServer()
    spf_good = f"v=spf1 ip4:{GOOD_IP} -all"
    key = dkim_record(key_a[1])
    # p=reject, SPF for GOOD_IP, two selectors with key A
    server.txt("sender.test", spf_good)
    server.txt("_dmarc.sender.test", "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test")
    server.txt("sel._domainkey.sender.test", key)
    server.txt("sel2._domainkey.sender.test", key)
    # p=quarantine
    server.txt("quarantine.test", spf_good)
    server.txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
    # a sender of its own domain only
    server.txt("evil.test", f"v=spf1 ip4:{EVIL_IP} -all")
    # a hosted domain publishing SPF (not for EVIL_IP), no DMARC
    server.txt("ourspf.test", "v=spf1 ip4:203.0.113.5 -all")
    # alignment: the signer is a subdomain of the From domain
    server.txt("_dmarc.relaxed.test", "v=DMARC1; p=reject")
    server.txt("sel._domainkey.mail.relaxed.test", key)
    server.txt("_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s")
    server.txt("sel._domainkey.mail.strict.test", key)
    # sp= for subdomains found through the organizational domain
    server.txt("_dmarc.parent.test", "v=DMARC1; p=none; sp=reject")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_raw(from_addr: str, body: str = "Hello there.\r\n", to: str = "ann@ourmail.test") -> bytes:
    return (
        f"From: Someone <{from_addr}>\r\n"
        f"To: {to}\r\n"
        "Subject: a test\r\n"
        "Date: Tue, 01 Dec 2026 01:00:00 +0000\r\n"
        "Message-ID: <t1@sender.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def sign(raw: bytes, domain: str, selector: str, private_pem: bytes) -> bytes:
    header: bytes = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return header + raw


def inbound(
    raw: bytes,
    *,
    mail_from: str,
    client_ip: str,
    hosted: frozenset[str] = frozenset({"ourmail.test", "ourspf.test"}),
) -> MailToCheck:
    return MailToCheck(
        raw=raw,
        parsed_message=parse_message(raw),
        mail_from=mail_from,
        recipients=("ann@ourmail.test",),
        direction="in",
        client_ip=client_ip,
        helo="client.example.test",
        hosted_domains=hosted,
    )


def auth_filter(server: DnsServer, timeout: float = 2.0) -> SenderAuthFilter:
    return SenderAuthFilter(
        AUTHSERV, nameservers=server.nameservers, port=server.port, timeout=timeout
    )


def header_of(result: FilterResult) -> str:
    (name, value), *others = result.headers
    assert name == "Authentication-Results"
    assert not others
    assert "\r" not in value and "\n" not in value
    return value


def reason_names(result: FilterResult) -> set[str]:
    return {r.name for r in result.reasons}


async def test_valid_dkim_and_spf_from_a_reject_domain_pass(
    nameserver: DnsServer, key_a: tuple[bytes, str]
) -> None:
    raw = sign(make_raw("bob@sender.test"), "sender.test", "sel", key_a[0])
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bob@sender.test", client_ip=GOOD_IP)
    )
    header = header_of(result)
    assert header.startswith(f"{AUTHSERV}; spf=pass smtp.mailfrom=sender.test; ")
    assert "dkim=pass header.d=sender.test header.s=sel " in header
    assert header.endswith("; dmarc=pass header.from=sender.test")
    assert result.verdict is None
    assert reason_names(result) == {"SPF_PASS", "DKIM_VALID", "DMARC_PASS"}
    assert result.score < 0


async def test_broken_signature_from_an_unauthorized_ip_is_rejected(
    nameserver: DnsServer, key_a: tuple[bytes, str]
) -> None:
    signed = sign(make_raw("bob@sender.test"), "sender.test", "sel", key_a[0])
    raw = signed.replace(b"Hello there.", b"Send me money.")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bob@sender.test", client_ip=OTHER_IP)
    )
    header = header_of(result)
    assert "spf=fail" in header
    assert 'dkim=fail reason="body hash mismatch" header.d=sender.test header.s=sel ' in header
    assert "dmarc=fail" in header
    assert result.verdict is Verdict.REJECT
    assert {"SPF_FAIL", "DKIM_INVALID", "DMARC_POLICY_REJECT"} <= reason_names(result)
    assert result.score > 0


async def test_failing_a_quarantine_policy_is_spam(nameserver: DnsServer) -> None:
    raw = make_raw("news@quarantine.test")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="news@quarantine.test", client_ip=OTHER_IP)
    )
    assert result.verdict is Verdict.SPAM
    assert "DMARC_POLICY_QUARANTINE" in reason_names(result)
    assert 'dmarc=fail reason="p=quarantine" header.from=quarantine.test' in header_of(result)


async def test_from_a_hosted_domain_arriving_from_outside_is_forged(
    nameserver: DnsServer,
) -> None:
    # ourmail.test publishes neither SPF nor DMARC: still forged over the MX.
    raw = make_raw("ceo@ourmail.test")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bounce@evil.test", client_ip=EVIL_IP)
    )
    assert result.verdict is Verdict.REJECT
    assert "FORGED_HOSTED_SENDER" in reason_names(result)
    assert "SPF_PASS" in reason_names(result)  # evil.test may send for itself
    header = header_of(result)
    assert "spf=pass smtp.mailfrom=evil.test" in header
    assert "dmarc=none header.from=ourmail.test" in header


async def test_mail_from_a_hosted_domain_failing_spf_is_rejected(
    nameserver: DnsServer,
) -> None:
    raw = make_raw("someone@evil.test")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="billing@ourspf.test", client_ip=EVIL_IP)
    )
    assert result.verdict is Verdict.REJECT
    assert {"SPF_FAIL", "FORGED_HOSTED_SENDER"} <= reason_names(result)
    assert "spf=fail" in header_of(result)


async def test_the_same_hosted_domain_is_not_forged_on_other_directions(
    nameserver: DnsServer,
) -> None:
    raw = make_raw("ceo@ourmail.test")
    mail = inbound(raw, mail_from="ceo@ourmail.test", client_ip=EVIL_IP)
    directions: tuple[Literal["local", "out"], ...] = ("local", "out")
    for direction in directions:
        local = MailToCheck(
            raw=mail.raw,
            parsed_message=mail.parsed,
            mail_from=mail.mail_from,
            recipients=mail.recipients,
            direction=direction,
            hosted_domains=mail.hosted_domains,
        )
        assert await auth_filter(nameserver).check(local) == FilterResult()


async def test_two_signatures_one_valid_one_broken_are_both_reported(
    nameserver: DnsServer, key_a: tuple[bytes, str], key_b: tuple[bytes, str]
) -> None:
    raw = make_raw("bob@sender.test")
    # sel2 publishes key A: a signature made with key B does not verify.
    raw = sign(raw, "sender.test", "sel2", key_b[0])
    raw = sign(raw, "sender.test", "sel", key_a[0])
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bob@sender.test", client_ip=OTHER_IP)
    )
    header = header_of(result)
    assert "dkim=pass header.d=sender.test header.s=sel " in header
    assert re.search(r"dkim=fail reason=\"[^\"]+\" header.d=sender.test header.s=sel2 ", header)
    assert header.index("header.s=sel ") < header.index("header.s=sel2 ")  # header order
    assert "dmarc=pass" in header  # the valid, aligned signature is enough
    assert result.verdict is None
    assert {"DKIM_VALID", "DKIM_INVALID", "SPF_FAIL", "DMARC_PASS"} <= reason_names(result)


async def test_an_unreachable_dns_server_is_a_temperror_not_a_rejection(
    key_a: tuple[bytes, str],
) -> None:
    server = DnsServer()
    server.start()
    port = server.port
    server.stop()  # nothing answers on that port now
    sender_auth = SenderAuthFilter(AUTHSERV, nameservers=["127.0.0.1"], port=port, timeout=1)
    raw = sign(make_raw("bob@sender.test"), "sender.test", "sel", key_a[0])
    result = await sender_auth.check(inbound(raw, mail_from="bob@sender.test", client_ip=OTHER_IP))
    header = header_of(result)
    assert "spf=temperror" in header
    assert "dkim=temperror" in header
    assert "dmarc=temperror" in header
    assert result.verdict is None
    assert {"SPF_TEMPERROR", "DKIM_TEMPERROR", "DMARC_TEMPERROR"} <= reason_names(result)
    assert result.score == 0
    # Nor does a hosted domain's From get refused while nothing can be checked.
    forged = await sender_auth.check(
        inbound(make_raw("ceo@ourmail.test"), mail_from="x@evil.test", client_ip=EVIL_IP)
    )
    assert forged.verdict is None
    assert "FORGED_HOSTED_SENDER" not in reason_names(forged)


@pytest.mark.parametrize(
    ("domain", "verdict", "dmarc"),
    [("relaxed.test", None, "pass"), ("strict.test", Verdict.REJECT, "fail")],
)
async def test_a_subdomain_signer_aligns_relaxed_but_not_strict(
    nameserver: DnsServer,
    key_a: tuple[bytes, str],
    domain: str,
    verdict: Verdict | None,
    dmarc: str,
) -> None:
    raw = sign(make_raw(f"bob@{domain}"), f"mail.{domain}", "sel", key_a[0])
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bounce@elsewhere.test", client_ip=OTHER_IP)
    )
    header = header_of(result)
    assert f"dkim=pass header.d=mail.{domain} header.s=sel " in header
    assert f"dmarc={dmarc} " in header
    assert result.verdict is verdict


async def test_a_subdomain_without_a_record_gets_the_parents_sp(
    nameserver: DnsServer,
) -> None:
    raw = make_raw("news@news.parent.test")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="news@news.parent.test", client_ip=OTHER_IP)
    )
    assert 'dmarc=fail reason="p=reject" header.from=news.parent.test' in header_of(result)
    assert result.verdict is Verdict.REJECT


async def test_an_arc_chain_is_reported(nameserver: DnsServer, key_a: tuple[bytes, str]) -> None:
    raw = sign(make_raw("bob@sender.test"), "sender.test", "sel", key_a[0])
    # A forwarder (sender.test's own key, for the test) checked it and sealed it.
    raw = b"Authentication-Results: fwd.sender.test; dkim=pass header.d=sender.test\r\n" + raw
    arc_set = dkim.arc_sign(
        raw, b"sel", b"sender.test", key_a[0], b"fwd.sender.test", include_headers=[b"from"]
    )
    raw = b"".join(arc_set) + raw
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="bob@sender.test", client_ip=GOOD_IP)
    )
    assert header_of(result).endswith("; arc=pass")


async def test_a_hosted_domain_that_proves_itself_is_not_forged(
    nameserver: DnsServer, key_a: tuple[bytes, str]
) -> None:
    # Our own mail coming back over the MX (a forward) with its signature intact.
    raw = sign(make_raw("bob@sender.test"), "sender.test", "sel", key_a[0])
    result = await auth_filter(nameserver).check(
        inbound(
            raw, mail_from="fwd@evil.test", client_ip=EVIL_IP, hosted=frozenset({"sender.test"})
        )
    )
    assert result.verdict is None
    assert "FORGED_HOSTED_SENDER" not in reason_names(result)


async def test_two_from_fields_are_a_dmarc_permerror(nameserver: DnsServer) -> None:
    raw = b"From: a@evil.test\r\n" + make_raw("ceo@ourmail.test")
    result = await auth_filter(nameserver).check(
        inbound(raw, mail_from="a@evil.test", client_ip=EVIL_IP)
    )
    assert 'dmarc=permerror reason="2 From fields, 2 author domains"' in header_of(result)
    # The hosted domain among them is still claimed from outside.
    assert result.verdict is Verdict.REJECT
    assert "FORGED_HOSTED_SENDER" in reason_names(result)


async def test_a_sender_checked_again_asks_dns_nothing_while_the_answers_hold(
    key_a: tuple[bytes, str],
) -> None:
    # Its own server: the module's answers no queries' log.
    server = DnsServer(log_queries=True)
    server.txt("sender.test", f"v=spf1 ip4:{GOOD_IP} -all")
    server.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    server.txt("sel._domainkey.sender.test", dkim_record(key_a[1]))
    server.start()
    try:
        checker = auth_filter(server)
        raw = sign(make_raw("ann@sender.test"), "sender.test", "sel", key_a[0])
        mail = inbound(raw, mail_from="ann@sender.test", client_ip=GOOD_IP)
        first = await checker.check(mail)
        asked = server.log().count("query[")
        second = await checker.check(mail)
        assert server.log().count("query[") == asked
        assert first == second
        assert {r.name for r in second.reasons} == {"SPF_PASS", "DKIM_VALID", "DMARC_PASS"}
        # Another client address is another SPF question; the records are
        # still known.
        other = await checker.check(inbound(raw, mail_from="ann@sender.test", client_ip=EVIL_IP))
        assert "SPF_FAIL" in {r.name for r in other.reasons}
        assert server.log().count("query[") == asked
    finally:
        server.stop()
