"""The content of an SMTP DATA command as it arrives (RFC 5321 section 4.5.2,
still dot-stuffed), made into the message we store: line endings, dot
transparency, and the size of the header section.

Line endings (RFC 5321 section 2.3.8, RFC 5322 section 2.1): only CRLF ends a
line. A bare LF or a bare CR is turned into CRLF here, as Postfix does by
default since 3.9 (``smtpd_forbid_bare_newline = normalize``), so that every
later reader (the stdlib's MIME parser, which breaks lines on CR and LF
alike; DKIM; a relay) sees the same lines the MX saw. Only CRLF.CRLF ends
the DATA, which the reader decides before any of this (decision 0025).
"""

from __future__ import annotations

import re

_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")

# One header field line or one continuation line, with its CRLF (RFC 5322
# section 2.2 and 2.2.3); the field-name characters are the stdlib parser's.
_HEADER_SECTION = re.compile(rb"(?:(?:[\x21-\x39\x3b-\x7e]+:|[ \t])[^\r\n]*\r\n)*")


def has_bare_line_breaks(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a CR or LF that is not part of a CRLF."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def to_crlf(data: bytes) -> bytes:
    """``data`` with every bare CR and bare LF made a CRLF (CRLF first, so a
    well-formed one stays one line end). Clean input is returned as it is."""
    if not has_bare_line_breaks(data):
        return data
    return _ANY_LINE_END.sub(b"\r\n", data)


def unstuff(data: bytes) -> bytes:
    """DATA content (CRLF line ends) without its transparency dots
    (RFC 5321 section 4.5.2): a line's leading dot removed."""
    data = data.replace(b"\r\n.", b"\r\n")
    return data[1:] if data.startswith(b".") else data


def header_section_size(content: bytes | bytearray, limit: int, line_limit: int) -> int:
    """How many bytes the header section of ``content`` (CRLF line ends)
    takes, counted up to ``limit + line_limit``: any answer over ``limit``
    means the section is over it. The section ends at the first line that is
    neither a field nor a continuation, as the stdlib parser reads it; the
    bytes read are bounded, whatever the message's size."""
    match = _HEADER_SECTION.match(content, 0, limit + line_limit + 2)
    return match.end() if match else 0


# The Message-ID field (RFC 5322 section 3.6.4) at the start of a line of the
# header section, its value possibly folded onto the next line.
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(?:\r\n[ \t]+)?([^\r\n]{0,998})", re.I | re.M)


def message_id_field(content: bytes, limit: int = 65536) -> str:
    """The Message-ID field's value as written (stripped, or "" when there is
    none in the first ``limit`` bytes of the header section): for the log
    line of a received mail, read without parsing the mail."""
    end = content.find(b"\r\n\r\n", 0, limit)
    found = _MESSAGE_ID.search(content, 0, end + 2 if end >= 0 else limit)
    return found.group(1).strip().decode("ascii", "replace") if found else ""
