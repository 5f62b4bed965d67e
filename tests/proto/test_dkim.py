"""DKIM: keys, the records to publish, and signatures that dkimpy's verifier
accepts (and rejects once the message is changed)."""

from __future__ import annotations

import base64
import email
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from mailfleet.proto.addresses import Address
from mailfleet.proto.compose import OutgoingAttachment, compose
from mailfleet.proto.dkim import (
    DkimError,
    dns_records,
    format_txt,
    generate_key,
    public_key_b64,
    sign,
    txt_strings,
    zone_file,
)

DOMAIN = "example.com"
SELECTOR = "mf2025"


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return generate_key()


def dnsfunc_for(public_b64: str, queried: list[bytes] | None = None) -> Callable[..., bytes]:
    """dkimpy's DNS hook answering from the record we would publish, joined from
    its 255-character strings as a resolver hands it over."""
    name, _, value = dns_records(DOMAIN, SELECTOR, public_b64, "mx.example.com")[0]
    published = "".join(txt_strings(value)).encode()

    def dnsfunc(qname: bytes, timeout: float = 5) -> bytes:
        if queried is not None:
            queried.append(qname)
        return published if qname == f"{name}.".encode() else b""

    return dnsfunc


def message(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "sender": Address("alice@example.com", "Alice Example"),
        "to": [Address("bob@example.net", "Bob"), Address("carol@example.org")],
        "cc": [Address("dave@example.net")],
        "subject": "Quarterly report",
        "text": "Hello Bob,\n\nthe report is attached.\n\n-- \nAlice\n",
        "html": "<p>Hello <b>Bob</b>,</p><p>the report is attached.</p>",
        "attachments": [OutgoingAttachment("report.csv", "text/csv", b"a,b\r\n1,2\r\n")],
        "message_id": "<m-1@example.com>",
        "date": datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    }
    args.update(overrides)
    return compose(**args)  # type: ignore[arg-type]


def signature_tags(signed: bytes) -> dict[bytes, bytes]:
    first, _, _ = signed.partition(b"\r\n\r\n")
    match = re.match(rb"DKIM-Signature: (.*?)\r\n(?! )", first + b"\r\n", re.DOTALL)
    assert match, signed[:200]
    tags: dict[bytes, bytes] = parse_tag_value(match.group(1))
    return tags


def test_generate_key() -> None:
    pem, public_b64 = generate_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert pem.endswith(b"-----END PRIVATE KEY-----\n")
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    public = serialization.load_der_public_key(base64.b64decode(public_b64, validate=True))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert public_key_b64(pem) == public_b64
    assert generate_key()[1] != public_b64  # a new key every time


def test_dns_records() -> None:
    assert dns_records("Example.COM", "MF2025", "MIIBIjAN\nBgkq", "mx.example.com.") == [
        ("mf2025._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=MIIBIjANBgkq"),
        ("example.com", "TXT", "v=spf1 mx -all"),
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"),
        ("example.com", "MX", "10 mx.example.com."),
    ]
    assert [name for name, _, _ in dns_records("bücher.de", "s1", "AAAA", "mx.bücher.de")] == [
        "s1._domainkey.xn--bcher-kva.de",
        "xn--bcher-kva.de",
        "_dmarc.xn--bcher-kva.de",
        "xn--bcher-kva.de",
    ]
    assert dns_records("bücher.de", "s1", "AAAA", "mx.bücher.de")[3][2] == "10 mx.xn--bcher-kva.de."


@pytest.mark.parametrize(
    ("domain", "selector"), [("example.com", "bad selector"), ("example.com", "-x"), ("nodot", "s")]
)
def test_dns_records_rejects(domain: str, selector: str) -> None:
    with pytest.raises(DkimError):
        dns_records(domain, selector, "AAAA", "mx.example.com")


def test_long_txt_is_split_into_255_character_strings(key: tuple[bytes, str]) -> None:
    _, public_b64 = key
    value = dns_records(DOMAIN, SELECTOR, public_b64, "mx.example.com")[0][2]
    assert len(value) == len("v=DKIM1; k=rsa; p=") + 392  # 2048-bit SubjectPublicKeyInfo
    strings = txt_strings(value)
    assert [len(s) for s in strings] == [255, len(value) - 255]
    assert "".join(strings) == value
    assert format_txt(value) == f'"{strings[0]}" "{strings[1]}"'
    assert format_txt('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert txt_strings("") == [""]


def test_zone_file() -> None:
    records = dns_records(DOMAIN, SELECTOR, "QUJD" * 70, "mx.example.com")
    strings = txt_strings("v=DKIM1; k=rsa; p=" + "QUJD" * 70)
    assert zone_file(records) == (
        f'mf2025._domainkey.example.com.\t3600\tIN\tTXT\t"{strings[0]}" "{strings[1]}"\n'
        'example.com.\t3600\tIN\tTXT\t"v=spf1 mx -all"\n'
        '_dmarc.example.com.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; '
        'rua=mailto:postmaster@example.com"\n'
        "example.com.\t3600\tIN\tMX\t10 mx.example.com.\n"
    )


def test_signed_message_verifies(key: tuple[bytes, str]) -> None:
    pem, public_b64 = key
    original = message()
    signed = sign(original, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(original)  # prepended, nothing else touched
    queried: list[bytes] = []
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(public_b64, queried)) is True
    assert queried == [b"mf2025._domainkey.example.com."]
    tags = signature_tags(signed)
    assert tags[b"v"] == b"1"
    assert tags[b"a"] == b"rsa-sha256"
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example.com"
    assert tags[b"s"] == b"mf2025"
    assert tags[b"i"] == b"@example.com"
    assert b"l" not in tags  # the whole body is signed
    assert re.sub(rb"\s", b"", tags[b"h"]).split(b":") == [
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"from",
    ]


def test_reply_headers_are_signed(key: tuple[bytes, str]) -> None:
    pem, public_b64 = key
    original = message(
        attachments=[],
        html=None,
        in_reply_to="<m-0@example.net>",
        references=["<m-00@example.net>", "<m-0@example.net>"],
    )
    signed = sign(original, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(public_b64)) is True
    assert re.sub(rb"\s", b"", signature_tags(signed)[b"h"]).split(b":") == [
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"in-reply-to",
        b"references",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"from",
    ]
    changed = signed.replace(b"In-Reply-To: <m-0@example.net>", b"In-Reply-To: <m-9@example.net>")
    assert changed != signed
    assert dkim.verify(changed, dnsfunc=dnsfunc_for(public_b64)) is False


def test_changes_break_the_signature(key: tuple[bytes, str]) -> None:
    pem, public_b64 = key
    signed = sign(message(), domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    verify = dnsfunc_for(public_b64)

    body_changed = signed.replace(b"the report is attached.", b"the report is attacked.", 1)
    assert body_changed != signed
    assert dkim.verify(body_changed, dnsfunc=verify) is False

    subject_changed = signed.replace(b"Subject: Quarterly report", b"Subject: Quarterly rep0rt")
    assert subject_changed != signed
    assert dkim.verify(subject_changed, dnsfunc=verify) is False

    # A second From cannot be slipped in: it is oversigned (h= lists "from"
    # twice, asserted above) for every verifier, and dkimpy's verifier also
    # hashes one extra From of its own accord.
    head, sep, rest = signed.partition(b"\r\nFrom: ")
    second_from = head + b"\r\nFrom: Mallory <mallory@example.com>" + sep + rest
    assert dkim.verify(second_from, dnsfunc=verify) is False

    # A different key at the selector fails too.
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(generate_key()[1])) is False

    # Fields that are not signed may be added by relays (Received, ...).
    received = b"Received: from relay.example.net by mx.example.org; Tue, 4 Mar 2025\r\n"
    assert dkim.verify(received + signed, dnsfunc=verify) is True


def test_folding_and_crlf(key: tuple[bytes, str]) -> None:
    pem, public_b64 = key
    many = [Address(f"recipient-number-{i}@example.net", f"Recipient {i}") for i in range(8)]
    original = message(to=many)
    signed = sign(original, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    assert b"\n" not in signed.replace(b"\r\n", b"")  # CRLF everywhere, no bare LF or CR
    assert b"\r" not in signed.replace(b"\r\n", b"")
    header = signed[: signed.index(b"\r\n", signed.index(b"b=")) + 2]
    assert header.count(b"\r\n ") >= 2  # the signature field itself is folded
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(public_b64)) is True
    parsed = email.message_from_bytes(signed, policy=policy.default)
    assert parsed["DKIM-Signature"] is not None
    assert len(parsed.get_all("To", [])) == 1
    # Relaxed canonicalization: a relay that unfolds the To field or changes
    # the whitespace inside it keeps the signature valid.
    to_start = signed.index(b"\r\nTo: ") + 2
    to_end = signed.index(b"\r\n", to_start)
    while signed[to_end + 2 : to_end + 3] in (b" ", b"\t"):
        to_end = signed.index(b"\r\n", to_end + 2)
    folded_to = signed[to_start:to_end]
    assert b"\r\n " in folded_to
    unfolded = signed[:to_start] + folded_to.replace(b"\r\n ", b"  ") + signed[to_end:]
    assert dkim.verify(unfolded, dnsfunc=dnsfunc_for(public_b64)) is True


def test_non_ascii_subject_verifies(key: tuple[bytes, str]) -> None:
    pem, public_b64 = key
    original = message(subject="Grüße aus München ✓", text="Schöne Grüße\n", html=None)
    assert b"Subject: =?utf-8?" in original  # RFC 2047, by compose
    signed = sign(original, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(public_b64)) is True
    parsed = email.message_from_bytes(signed, policy=policy.default)
    assert str(parsed["Subject"]) == "Grüße aus München ✓"


def test_idna_signing_domain_is_an_a_label(key: tuple[bytes, str]) -> None:
    pem, _ = key
    signed = sign(message(), domain="Bücher.de", selector=SELECTOR, private_key_pem=pem)
    assert signature_tags(signed)[b"d"] == b"xn--bcher-kva.de"


def test_sign_rejects_bad_input(key: tuple[bytes, str]) -> None:
    pem, _ = key
    no_from = b"To: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n"
    with pytest.raises(DkimError, match="no From"):
        sign(no_from, domain=DOMAIN, selector=SELECTOR, private_key_pem=pem)
    with pytest.raises(DkimError, match="cannot sign"):
        sign(message(), domain=DOMAIN, selector=SELECTOR, private_key_pem=b"not a key")
    with pytest.raises(DkimError, match="invalid DKIM selector"):
        sign(message(), domain=DOMAIN, selector="a b", private_key_pem=pem)
    with pytest.raises(DkimError):
        public_key_b64(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
