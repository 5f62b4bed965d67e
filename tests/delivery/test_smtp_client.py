"""DATA content as the client writes it: the receiver's un-stuffing (RFC 5321
section 4.5.2) gives back exactly the message."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailfleet.delivery.smtp_client import dot_stuff, normalize_crlf


def unstuff(data: bytes) -> bytes:
    """What a receiver stores: the lines before the lone dot, a leading dot
    removed from each, every line ending in CRLF."""
    lines = data.split(b"\r\n")
    assert lines[-2:] == [b".", b""], data  # the terminator, and nothing after it
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-2])


@given(st.lists(st.binary(max_size=5) | st.sampled_from([b".", b"\r\n", b"\n."]), max_size=12))
def test_dot_stuffing_round_trips(parts: list[bytes]) -> None:
    message = normalize_crlf(b"".join(parts))
    data = dot_stuff(message)
    whole_lines = message if not message or message.endswith(b"\r\n") else message + b"\r\n"
    assert unstuff(data) == whole_lines


def test_examples() -> None:
    assert dot_stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert dot_stuff(b".\r\n") == b"..\r\n.\r\n"
    assert dot_stuff(b"\r\n") == b"\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"
    assert normalize_crlf(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"
