"""``message_id_field``: the Message-ID of received mail for its log line,
read without parsing (decision 0029)."""

from __future__ import annotations

import pytest

from mailfleet.proto.smtp_data import message_id_field


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"From: a@b\r\nMessage-ID: <x@y>\r\n\r\nbody", "<x@y>"),
        (b"message-id:<x@y>  \r\n\r\n", "<x@y>"),
        (b"Subject: s\r\nMessage-Id:\r\n <folded@y>\r\nTo: c@d\r\n\r\n", "<folded@y>"),
        # Only in the header section, only at the start of a line.
        (b"From: a@b\r\n\r\nMessage-ID: <in-body@y>\r\n", ""),
        (b"X-Old-Message-ID: <other@y>\r\n\r\n", ""),
        (b"Message-ID: <last-line@y>", "<last-line@y>"),
        (b"", ""),
    ],
)
def test_message_id_field(content: bytes, expected: str) -> None:
    assert message_id_field(content) == expected


def test_message_id_field_reads_a_bounded_header_section() -> None:
    late = b"X: " + b"y" * 70000 + b"\r\nMessage-ID: <late@y>\r\n\r\n"
    assert message_id_field(late) == ""
    assert message_id_field(late, limit=100000) == "<late@y>"
