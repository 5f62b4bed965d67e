"""What the message submission agent does to a message a user's client hands
it (RFC 6409 section 8), before it is stored or sent on:

- the author fields (From, Sender) must name the authenticated sender, so a
  user cannot write as someone else;
- Bcc and Resent-Bcc are removed (RFC 5322 section 3.6.3: the blind
  recipients come from the SMTP envelope, and no copy may name them);
- Date and Message-ID are added when the client left them out (RFC 6409
  sections 8.2 and 8.3), From when it is missing altogether.

Pure: bytes in, bytes out. Everything but the header fields named above is
passed through byte for byte (a later DKIM signature covers what the user sent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from email.utils import format_datetime, getaddresses

from mailfleet.proto.addresses import (
    Address,
    AddressError,
    format_address,
    mailbox_key,
    normalize_email,
)
from mailfleet.proto.compose import new_message_id

# Line ends as the stdlib parser (and so proto/mime/) reads them: a bare CR
# ends a line too. Reading them differently would let a field hide from one
# reader and show to the other.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_END_TEXT = re.compile(r"\r\n|\r|\n")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # ftext, RFC 5322 section 3.6.8
_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_AUTHOR_FIELDS = {"from", "sender"}
_BLIND_FIELDS = {"bcc", "resent-bcc"}
CRLF = b"\r\n"


class HeaderError(ValueError):
    """The header section is not a list of header fields."""


class AuthorError(ValueError):
    """From or Sender names someone other than the sender."""


@dataclass(frozen=True, slots=True)
class Submission:
    raw: bytes  # the message to store and send
    bcc: tuple[Address, ...]  # who the removed Bcc fields named
    message_id: str  # the Message-ID field's id, ours when we added it


def header_fields(raw: bytes) -> tuple[list[tuple[str, list[bytes]]], bytes]:
    """The header fields (name, source lines with their line ends) and the
    rest of the message from the blank line that ends the header section
    (empty when there is none). HeaderError on a line that is neither a field
    nor a continuation: a parser would end the header section there, and what
    follows could read as header fields to one program and as body to another."""
    fields: list[tuple[str, list[bytes]]] = []
    position = 0
    number = 0
    while position < len(raw):
        number += 1
        end = _LINE_END.search(raw, position)
        content_end, line_end = (end.start(), end.end()) if end else (len(raw), len(raw))
        content = raw[position:content_end]
        line = raw[position:line_end]
        if not content:
            return fields, raw[position:]
        if content[:1] in (b" ", b"\t"):
            if not fields:
                raise HeaderError("the header section starts with a continuation line")
            fields[-1][1].append(line)
        else:
            name, colon, _ = content.partition(b":")
            if not colon or not _FIELD_NAME.fullmatch(name):
                raise HeaderError(f"line {number} of the header section is not a header field")
            fields.append((name.decode("ascii"), [line]))
        position = line_end
    return fields, b""


def field_value(lines: list[bytes]) -> str:
    """The unfolded value of a header field (RFC 5322 section 2.2.3); UTF-8
    (RFC 6532) with undecodable bytes kept as surrogates."""
    text = b"".join(lines).decode("utf-8", "surrogateescape")
    return _LINE_END_TEXT.sub("", text.partition(":")[2]).strip()


def author_addresses(value: str) -> list[str]:
    """The addresses of a From or Sender field; AuthorError when it holds
    none or cannot be read unambiguously (the stdlib's address parser in
    Python 3.11 accepts forms such as ``a@x.org@y.org`` and reads them one
    way while other mail readers read them another)."""
    parsed = [(name, addr) for name, addr in getaddresses([value]) if name or addr]
    if not parsed or any(not addr for _, addr in parsed):
        raise AuthorError(f"no readable address in {value!r}")
    outside = _COMMENT.sub(" ", _QUOTED.sub(" ", value))
    if outside.count("@") != len(parsed):
        raise AuthorError(f"ambiguous addresses in {value!r}")
    return [addr for _, addr in parsed]


def _is_author(address: str, author: Address) -> bool:
    try:
        return mailbox_key(normalize_email(address)) == mailbox_key(author.email)
    except AddressError:
        return False


def _decoded_name(name: str) -> str:
    try:
        return " ".join(str(make_header(decode_header(name))).split())
    except Exception:  # a broken encoded-word: the name is only shown, never used
        return ""


def _blind_addresses(value: str) -> list[Address]:
    found = []
    for name, addr in getaddresses([value]):
        try:
            found.append(Address(normalize_email(addr), _decoded_name(name)))
        except AddressError:
            continue  # Bcc only informs the sender's copy; recipients come from the envelope
    return found


def prepare_submission(raw: bytes, author: Address, hostname: str, now: datetime) -> Submission:
    """``raw`` as it may leave: author fields checked, Bcc removed, Date,
    Message-ID and From added when missing. Raises HeaderError or AuthorError."""
    fields, rest = header_fields(raw)
    kept: list[bytes] = []
    bcc: list[Address] = []
    has_from = has_date = False
    message_id: str | None = None
    for name, lines in fields:
        key = name.lower()
        value = field_value(lines)
        if key in _AUTHOR_FIELDS:
            for address in author_addresses(value):
                if not _is_author(address, author):
                    raise AuthorError(f"{name}: {address} is not {author.email}")
            has_from = has_from or key == "from"
        elif key in _BLIND_FIELDS:
            if key == "bcc":
                bcc.extend(_blind_addresses(value))
            continue
        elif key == "message-id":
            found = _MSG_ID.search(value)
            if found is None or message_id is not None:
                continue  # unreadable or a second one: replaced by ours
            message_id = found.group(0)
        elif key == "date":
            has_date = True
        kept.append(b"".join(lines))
    added: list[bytes] = []
    if not has_from:
        added.append(b"From: " + format_address(author).encode("utf-8") + CRLF)
    if not has_date:
        added.append(b"Date: " + format_datetime(now).encode("ascii") + CRLF)
    if message_id is None:
        message_id = new_message_id(hostname)
        added.append(b"Message-ID: " + message_id.encode("utf-8") + CRLF)
    return Submission(b"".join([*added, *kept]) + rest, tuple(bcc), message_id)
