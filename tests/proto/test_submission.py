"""What the submission agent changes in a submitted message, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailfleet.proto.addresses import Address
from mailfleet.proto.submission import AuthorError, HeaderError, prepare_submission

ALICE = Address("alice@example.com", "Alice Example")
NOW = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)


def prepare(raw: bytes) -> bytes:
    return prepare_submission(raw, ALICE, "mail.example.com", NOW).raw


def test_bcc_fields_are_removed_with_their_continuation_lines() -> None:
    raw = (
        b"From: alice@example.com\r\nBcc: Dave <dave@example.com>,\r\n"
        b"  hidden@other.example\r\nTo: bob@example.com\r\nResent-Bcc: x@y.example\r\n"
        b"Date: Tue, 24 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@client.example>\r\n"
        b"\r\nBcc: in the body stays\r\n"
    )
    result = prepare_submission(raw, ALICE, "mail.example.com", NOW)
    assert result.raw == (
        b"From: alice@example.com\r\nTo: bob@example.com\r\n"
        b"Date: Tue, 24 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@client.example>\r\n"
        b"\r\nBcc: in the body stays\r\n"
    )
    assert result.bcc == (Address("dave@example.com", "Dave"), Address("hidden@other.example"))
    assert result.message_id == "<m1@client.example>"


def test_missing_fields_are_added_and_the_rest_kept_byte_for_byte() -> None:
    raw = b"To: bob@example.com\r\nSubject: hi\r\n\r\n\xc3\xa4 body\r\n"
    result = prepare_submission(raw, ALICE, "mail.example.com", NOW)
    head, _, _ = result.raw.partition(b"To: ")
    assert head == (
        b"From: Alice Example <alice@example.com>\r\n"
        b"Date: Tue, 24 Nov 2026 20:00:00 +0000\r\n"
        + f"Message-ID: {result.message_id}\r\n".encode()
    )
    assert result.message_id.endswith("@mail.example.com>")
    assert result.raw.endswith(raw)


def test_unreadable_message_id_is_replaced() -> None:
    raw = b"From: alice@example.com\r\nMessage-ID: garbage\r\nDate: x\r\n\r\nb\r\n"
    result = prepare_submission(raw, ALICE, "mail.example.com", NOW)
    assert b"garbage" not in result.raw
    assert result.raw.count(b"Message-ID: ") == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"From: Alice <ALICE@Example.COM>\r\n\r\nb\r\n",
        b"From: alice@example.com (me)\r\n\r\nb\r\n",
        b'From: "x@other.example" <alice@example.com>\r\n\r\nb\r\n',
        b"From: =?utf-8?q?Al=C3=AFce?=\r\n <alice@example.com>\r\n\r\nb\r\n",
        b"Sender: alice@example.com\r\nFrom: alice@example.com\r\n\r\nb\r\n",
        b"From: alice@example.com\r\nSubject: no body, no blank line\r\n",
    ],
)
def test_the_sender_may_write_as_themselves(raw: bytes) -> None:
    assert prepare(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: bob@example.com\r\n\r\nb\r\n",
        b"From: alice@example.com\r\nFrom: bob@example.com\r\n\r\nb\r\n",
        b"From: alice@example.com,\r\n bob@example.com\r\n\r\nb\r\n",
        b"From: alice@example.com <bob@example.com>\r\n\r\nb\r\n",
        b"From: alice@example.com@other.example\r\n\r\nb\r\n",
        b"From: undisclosed\r\n\r\nb\r\n",
        b"From: alice@example.com\r\nSender: bob@example.com\r\n\r\nb\r\n",
        # A bare CR ends a line for the stdlib parser: the second From is a field.
        b"Subject: x\rFrom: bob@example.com\r\nFrom: alice@example.com\r\n\r\nb\r\n",
    ],
)
def test_writing_as_someone_else_is_refused(raw: bytes) -> None:
    with pytest.raises(AuthorError):
        prepare(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b" folded first line\r\nFrom: alice@example.com\r\n\r\nb\r\n",
        b"From: alice@example.com\r\nnot a field\r\nFrom: bob@example.com\r\n\r\nb\r\n",
        b"From alice@example.com Tue Nov 24\r\nFrom: alice@example.com\r\n\r\nb\r\n",
        b"From : bob@example.com\r\nFrom: alice@example.com\r\n\r\nb\r\n",
    ],
)
def test_malformed_header_sections_are_refused(raw: bytes) -> None:
    with pytest.raises(HeaderError):
        prepare(raw)
