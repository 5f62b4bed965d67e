"""The whole message: raw bytes in, a ``ParsedMessage`` (what a mail reader
shows) out. Bounds the nesting, lets the stdlib split the MIME structure,
walks it, reads the top-level header fields. ``parse_message`` never raises.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser

from mailfleet.proto.addresses import Address
from mailfleet.proto.compose import html_to_text
from mailfleet.proto.mime.charsets import decode_bytes, normalize_text
from mailfleet.proto.mime.defects import Defects
from mailfleet.proto.mime.headers import (
    first_msg_id,
    msg_ids,
    read_addresses,
    read_date,
    read_subject,
    top_headers,
)
from mailfleet.proto.mime.htmlbody import sanitize_body
from mailfleet.proto.mime.nesting import limit_nesting
from mailfleet.proto.mime.walk import ParsedAttachment, Walker


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    date: datetime | None  # aware, UTC
    text: str  # "\n" line ends
    html: str | None  # sanitized
    attachments: tuple[ParsedAttachment, ...]
    defects: tuple[str, ...]
    # For the spam rules (filters/rules.py): whether the mail has a text/plain
    # body of its own, and the HTML as sent, before sanitizing.
    has_plain: bool = False
    html_source: str | None = None


def parse_message(raw: bytes) -> ParsedMessage:
    """What a reader shows of ``raw``. Never raises."""
    defects = Defects()
    try:
        return _parse(bytes(raw), defects)
    except Exception as exc:  # the last line of defence: a bug here must not lose mail
        defects.add(f"parser failure ({type(exc).__name__}); the message is shown as raw text")
        try:
            text = normalize_text(decode_bytes(bytes(raw), None, defects, "message"), defects)
        except Exception:
            text = ""
        return ParsedMessage(
            "", None, (), (), (), None, None, (), None, text, None, (), defects.all()
        )


def _parse(raw: bytes, defects: Defects) -> ParsedMessage:
    linesep = b"\r\n" if b"\r\n" in raw else b"\n"
    msg = _load(limit_nesting(raw, defects), defects)
    headers = top_headers(msg, defects)

    walker = Walker(defects, linesep)
    plain, html_source = walker.visit(msg, 0, "text/plain")
    html = sanitize_body(html_source, defects) if html_source is not None else None
    if plain is not None:
        text = plain
    elif html:
        text = html_to_text(html)
    else:
        text = ""

    sender = read_addresses(headers, "from", defects)
    references = tuple(dict.fromkeys(msg_ids(" ".join(headers.get("references", [])))))
    return ParsedMessage(
        subject=read_subject(headers, defects),
        sender=sender[0] if sender else None,
        to=tuple(read_addresses(headers, "to", defects)),
        cc=tuple(read_addresses(headers, "cc", defects)),
        reply_to=tuple(read_addresses(headers, "reply-to", defects)),
        message_id=first_msg_id(headers, "message-id"),
        in_reply_to=first_msg_id(headers, "in-reply-to"),
        references=references,
        date=read_date(headers, defects),
        text=normalize_text(text, defects),
        html=html,
        attachments=tuple(walker.attachments),
        defects=defects.all(),
        has_plain=plain is not None,
        html_source=html_source,
    )


def _load(raw: bytes, defects: Defects) -> Message:
    """The MIME tree. Split with the compat32 policy: both policies build the
    same tree (the split is the feed parser's), but the default policy parses
    header fields while splitting, which raises on some malformed Content-Type
    values (IndexError) and is superlinear in a field's parameters (a 40 kB
    Content-Type takes seconds). Header fields are decoded here, from the raw
    source, so nothing is lost. Past both policies, the body is kept as text."""
    for name, pol in (("compat32", policy.compat32), ("default", policy.default)):
        try:
            return email.message_from_bytes(raw, policy=pol)
        except Exception as exc:
            defects.add(f"MIME structure unreadable with the {name} policy ({type(exc).__name__})")
    defects.add("MIME structure unreadable; body kept as text")
    try:
        msg = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    except Exception:
        msg = Message(policy=policy.compat32)
        msg.set_payload(raw.decode("ascii", "surrogateescape"))
    return msg
