"""Bounces (RFC 3464 DSNs): built, then read back with the stdlib parser and
field by field from the wire."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message, MIMEPart

import pytest

from mailfleet.proto.dsn import DELAYED_SUBJECT, FAILED_SUBJECT, FailedRecipient, build_dsn

ARRIVED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
NOW = datetime(2025, 3, 9, 5, 6, 7, tzinfo=UTC)
ORIGINAL = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net, carol@example.org\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Tue, 04 Mar 2025 05:06:00 +0000\r\n"
    b"Message-ID: <orig-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The body is never returned.\r\n"
)
ORIGINAL_HEADERS = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
GMAIL_REPLY = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
    "550 5.1.1 unnecessary spaces. a1si123 - gsmtp"
)


def dsn(recipients: list[FailedRecipient], **overrides: object) -> bytes:
    args: dict[str, object] = {
        "reporting_mta": "mx.example.com",
        "postmaster": "postmaster@example.com",
        "original_mail_from": "alice@example.com",
        "original_headers": ORIGINAL,
        "recipients": recipients,
        "arrival_date": ARRIVED,
        "message_id": "<dsn-1@example.com>",
        "date": NOW,
    }
    args.update(overrides)
    return build_dsn(**args)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def part_bodies(raw: bytes) -> list[bytes]:
    """The body octets of each part of the report, exactly as on the wire."""
    boundary = parse(raw).get_boundary()
    assert boundary
    chunks = raw.split(b"\r\n--" + boundary.encode())
    bodies = []
    for chunk in chunks[1:-1]:
        _, _, body = chunk.partition(b"\r\n\r\n")
        bodies.append(body)
    assert chunks[-1] == b"--\r\n"
    return bodies


def report_fields(part: MIMEPart) -> list[list[tuple[str, str]]]:
    """The blocks of a message/delivery-status part as the stdlib reads them."""
    payload = part.get_payload()
    assert isinstance(payload, list)
    blocks = []
    for block in payload:
        assert isinstance(block, Message)
        blocks.append([(k, str(v)) for k, v in block.items()])
    return blocks


def field_blocks(body: bytes) -> list[list[tuple[str, str]]]:
    """RFC 3464 field blocks: unfolded ``(name, value)`` pairs per block."""
    blocks = []
    for block in body.decode("utf-8").strip("\r\n").split("\r\n\r\n"):
        unfolded = re.sub(r"\r\n(?=[ \t])", "", block)
        blocks.append([tuple(line.split(": ", 1)) for line in unfolded.split("\r\n")])
    return blocks  # type: ignore[return-value]


def test_failed_report_structure_and_fields() -> None:
    raw = dsn(
        [
            FailedRecipient("bob@example.net", "5.1.1", GMAIL_REPLY, "mx1.example.net"),
            FailedRecipient("carol@example.org", "5.4.7", "delivery time expired", None),
        ]
    )
    msg = parse(raw)
    assert [(k, str(v)) for k, v in msg.items()] == [
        ("From", "Mail Delivery System <postmaster@example.com>"),
        ("To", "alice@example.com"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("Date", "Sun, 09 Mar 2025 05:06:07 +0000"),
        ("Message-ID", "<dsn-1@example.com>"),
        ("In-Reply-To", "<orig-1@example.com>"),
        ("References", "<orig-1@example.com>"),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
        ("Content-Type", msg["Content-Type"]),
    ]
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, status, headers = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"

    assert text.get_content().replace("\r\n", "\n") == (
        "This is the mail system at mx.example.com.\n"
        "\n"
        'Your message of Tue, 04 Mar 2025 05:06:07 +0000 with the subject "Quarterly\n'
        'report" could not be delivered to the recipients below. It will not be sent\n'
        "again; check the address, or send it again later if the reason given is\n"
        "temporary.\n"
        "\n"
        "  bob@example.net: the mailbox does not exist (status 5.1.1).\n"
        "    The server mx1.example.net answered:\n"
        "      550-5.1.1 The email account that you tried to reach does not exist.\n"
        "      Please try 550-5.1.1 double-checking the recipient's email address for\n"
        "      typos or 550 5.1.1 unnecessary spaces. a1si123 - gsmtp\n"
        "\n"
        "  carol@example.org: delivery took too long and was given up (status 5.4.7).\n"
        "    Reason: delivery time expired\n"
        "\n"
        "The headers of your message are attached.\n"
    )

    # The stdlib reads the report as its blocks of fields.
    blocks = report_fields(status)
    diagnostic = (
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist. "
        "Please try 550-5.1.1 double-checking the recipient's email address for "
        "typos or 550 5.1.1 unnecessary spaces. a1si123 - gsmtp"
    )
    expected = [
        [
            ("Reporting-MTA", "dns; mx.example.com"),
            ("Arrival-Date", "Tue, 04 Mar 2025 05:06:07 +0000"),
        ],
        [
            ("Final-Recipient", "rfc822; bob@example.net"),
            ("Action", "failed"),
            ("Status", "5.1.1"),
            ("Remote-MTA", "dns; mx1.example.net"),
            ("Diagnostic-Code", diagnostic),
        ],
        [
            ("Final-Recipient", "rfc822; carol@example.org"),
            ("Action", "failed"),
            ("Status", "5.4.7"),
            ("Diagnostic-Code", "X-Mailfleet; delivery time expired"),
        ],
    ]
    assert blocks == expected
    # And on the wire: folded at spaces, CRLF, 78 columns at most.
    body = part_bodies(raw)[1]
    assert field_blocks(body) == expected
    assert body.startswith(
        b"Reporting-MTA: dns; mx.example.com\r\n"
        b"Arrival-Date: Tue, 04 Mar 2025 05:06:07 +0000\r\n"
        b"\r\n"
        b"Final-Recipient: rfc822; bob@example.net\r\n"
        b"Action: failed\r\n"
        b"Status: 5.1.1\r\n"
        b"Remote-MTA: dns; mx1.example.net\r\n"
        b"Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach\r\n"
        b" does not exist. Please try 550-5.1.1 double-checking the recipient's email\r\n"
    )

    assert headers.get_content() == ORIGINAL_HEADERS.decode()
    assert part_bodies(raw)[2] == ORIGINAL_HEADERS
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_non_ascii_recipient_and_odd_diagnostic_survive() -> None:
    recipient = "δοκιμή@παράδειγμα.example"
    odd = (
        f"550-5.1.1 <{recipient}>: Benutzer unbekannt ☃\r\n"
        '550 5.1.1 "quoted"; semi;colons =?utf-8?q?not_encoded?= \x00nul\ttab\x7f end'
    )
    original = "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße ✓\r\n\r\nbody\r\n".encode()
    raw = dsn(
        [
            FailedRecipient(recipient, "5.1.1", odd, "mx.παράδειγμα.example"),
            FailedRecipient(
                "ascii@example.net", "5.2.2", "552 5.2.2 mailbox full", "mx.example.net"
            ),
        ],
        original_mail_from="jörg@bücher.example",
        original_headers=original,
    )
    msg = parse(raw)
    assert str(msg["To"]) == "jörg@bücher.example"
    assert b"To: j\xc3\xb6rg@b\xc3\xbccher.example\r\n" in raw  # UTF-8 header (RFC 6532)
    text, status, headers = msg.iter_parts()
    # RFC 6533: the internationalized report and header types.
    assert status.get_content_type() == "message/global-delivery-status"
    assert headers.get_content_type() == "message/global-headers"
    cleaned = (
        f"550-5.1.1 <{recipient}>: Benutzer unbekannt ☃ "
        '550 5.1.1 "quoted"; semi;colons =?utf-8?q?not_encoded?= nul tab end'
    )
    assert field_blocks(part_bodies(raw)[1]) == [
        [
            ("Reporting-MTA", "dns; mx.example.com"),
            ("Arrival-Date", "Tue, 04 Mar 2025 05:06:07 +0000"),
        ],
        [
            ("Final-Recipient", f"utf-8; {recipient}"),
            ("Action", "failed"),
            ("Status", "5.1.1"),
            ("Remote-MTA", "dns; mx.παράδειγμα.example"),
            ("Diagnostic-Code", f"smtp; {cleaned}"),
        ],
        [
            ("Final-Recipient", "rfc822; ascii@example.net"),
            ("Action", "failed"),
            ("Status", "5.2.2"),
            ("Remote-MTA", "dns; mx.example.net"),
            ("Diagnostic-Code", "smtp; 552 5.2.2 mailbox full"),
        ],
    ]
    assert (
        part_bodies(raw)[2]
        == "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße ✓\r\n\r\n".encode()
    )
    explanation = text.get_content().replace("\r\n", "\n")
    assert f"  {recipient}: the mailbox does not exist (status 5.1.1).\n" in explanation
    assert "Benutzer unbekannt ☃" in explanation
    assert '"Grüße ✓"' in explanation
    assert "ascii@example.net: the mailbox is full (status 5.2.2)." in explanation
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_a_diagnostic_cannot_add_fields() -> None:
    sneaky = "550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; eve@example.net"
    raw = dsn([FailedRecipient("bob@example.net", "5.0.0", sneaky, "mx.example.net")])
    status = list(parse(raw).iter_parts())[1]
    blocks = report_fields(status)
    assert blocks[1:] == [
        [
            ("Final-Recipient", "rfc822; bob@example.net"),
            ("Action", "failed"),
            ("Status", "5.0.0"),
            ("Remote-MTA", "dns; mx.example.net"),
            (
                "Diagnostic-Code",
                "smtp; 550 no Action: delivered Final-Recipient: rfc822; eve@example.net",
            ),
        ]
    ]


def test_delayed_report() -> None:
    raw = dsn(
        [
            FailedRecipient(
                "bob@example.net",
                "4.4.1",
                "connection refused by mx1.example.net",
                None,
                action="delayed",
            ),
            FailedRecipient(
                "carol@example.org",
                "4.2.2",
                "452 4.2.2 Mailbox full, try later",
                "mx.example.org",
                action="delayed",
            ),
        ]
    )
    msg = parse(raw)
    assert str(msg["Subject"]) == DELAYED_SUBJECT == "Delayed Mail (still being retried)"
    text, status, _ = msg.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    blocks = report_fields(status)
    assert blocks[1:] == [
        [
            ("Final-Recipient", "rfc822; bob@example.net"),
            ("Action", "delayed"),
            ("Status", "4.4.1"),
            ("Diagnostic-Code", "X-Mailfleet; connection refused by mx1.example.net"),
        ],
        [
            ("Final-Recipient", "rfc822; carol@example.org"),
            ("Action", "delayed"),
            ("Status", "4.2.2"),
            ("Remote-MTA", "dns; mx.example.org"),
            ("Diagnostic-Code", "smtp; 452 4.2.2 Mailbox full, try later"),
        ],
    ]
    assert text.get_content().replace("\r\n", "\n") == (
        "This is the mail system at mx.example.com.\n"
        "\n"
        'Your message of Tue, 04 Mar 2025 05:06:07 +0000 with the subject "Quarterly\n'
        'report" has not been delivered yet to the recipients below. The mail system\n'
        "keeps trying and will tell you if it gives up; you do not need to send it\n"
        "again.\n"
        "\n"
        "  bob@example.net: the receiving server did not answer (status 4.4.1).\n"
        "    Reason: connection refused by mx1.example.net\n"
        "\n"
        "  carol@example.org: the mailbox is full (status 4.2.2).\n"
        "    The server mx.example.org answered:\n"
        "      452 4.2.2 Mailbox full, try later\n"
        "\n"
        "The headers of your message are attached.\n"
    )


def test_failed_and_delayed_together_is_a_bounce() -> None:
    raw = dsn(
        [
            FailedRecipient("bob@example.net", "5.1.1", "550 5.1.1 unknown", "mx.example.net"),
            FailedRecipient("carol@example.org", "4.4.1", "", None, action="delayed"),
        ]
    )
    msg = parse(raw)
    assert str(msg["Subject"]) == FAILED_SUBJECT
    status = list(msg.iter_parts())[1]
    # No diagnostic given: no Diagnostic-Code field.
    assert report_fields(status)[2] == [
        ("Final-Recipient", "rfc822; carol@example.org"),
        ("Action", "delayed"),
        ("Status", "4.4.1"),
    ]


def test_original_headers_lf_and_no_message_id() -> None:
    raw = dsn(
        [FailedRecipient("bob@example.net", "5.1.1", "550 unknown", None)],
        original_headers=b"From: alice@example.com\nSubject: hi\n\nbody\n",
    )
    msg = parse(raw)
    assert msg["In-Reply-To"] is None
    assert msg["References"] is None
    assert part_bodies(raw)[2] == b"From: alice@example.com\r\nSubject: hi\r\n"


def test_very_long_word_stays_within_the_line_limit() -> None:
    raw = dsn([FailedRecipient("bob@example.net", "5.0.0", "550 " + "x" * 2000, None)])
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    ("recipients", "changes", "message"),
    [
        ([], {}, "at least one recipient"),
        ([FailedRecipient("b@example.net", "5.1.1", "", None)], {"original_mail_from": ""}, "null"),
        ([FailedRecipient("b@example.net", "550", "x", None)], {}, "invalid status code '550'"),
        (
            [FailedRecipient("b@example.net", "5.1.1", "x", None, "bounced")],
            {},
            "invalid DSN action 'bounced'",
        ),
    ],
)
def test_rejects_bad_input(
    recipients: list[FailedRecipient], changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dsn(recipients, **changes)
