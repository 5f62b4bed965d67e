"""Header fields of received mail (RFC 5322 section 2.2 and 3.6, UTF-8 fields
of RFC 6532): read from the raw source, unfolded, 8-bit bytes that are not
UTF-8 read as windows-1252, control characters removed. The fields a reader
is shown: Subject, From/To/Cc/Reply-To (RFC 5322 3.4, through the lenient
lexer of ``proto/addresses.py``), Message-ID/In-Reply-To/References (3.6.4),
Date (3.3), Content-ID (RFC 2045 section 7). Also RFC 2047 encoded-words,
wherever they appear (section 6.2: adjacent words joined and decoded together).
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from mailfleet.proto.addresses import Address, read_address_list
from mailfleet.proto.mime.charsets import cp1252, decode_bytes
from mailfleet.proto.mime.defects import Defects, short, valid_text
from mailfleet.proto.mime.transfer import b64decode

_TOP_FIELDS = {
    "subject",
    "from",
    "to",
    "cc",
    "reply-to",
    "message-id",
    "in-reply-to",
    "references",
    "date",
}


def top_headers(msg: Message, defects: Defects) -> dict[str, list[str]]:
    return raw_headers(msg, _TOP_FIELDS, defects)


def raw_headers(msg: Message, wanted: set[str], defects: Defects) -> dict[str, list[str]]:
    """Unfolded header values as text, for the fields named. Read from the raw
    source: the default policy's header objects raise on malformed values."""
    out: dict[str, list[str]] = {}
    try:
        items = list(msg.raw_items())
    except Exception:
        return out
    for name, value in items:
        key = str(name).strip().lower()
        if key not in wanted:
            continue
        try:
            out.setdefault(key, []).append(_header_text(value, key, defects))
        except Exception:
            defects.add(f"unreadable {key} header")
    return out


def headers_of_bytes(data: bytes, defects: Defects) -> dict[str, list[str]]:
    try:
        msg = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)
    except Exception:
        return {}
    return raw_headers(msg, {"subject"}, defects)


_HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_text(value: object, name: str, defects: Defects) -> str:
    """RFC 6532: raw 8-bit header bytes are UTF-8; when they are not, they are
    most likely windows-1252."""
    data = (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogateescape")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = cp1252(data)
        defects.add(f"{name} header has 8-bit bytes that are not UTF-8; read as windows-1252")
    text = re.sub(r"\r\n|\r|\n", "", text)  # RFC 5322 2.2.3 unfolding
    if "\x00" in text:
        defects.add(f"NUL characters removed from the {name} header")
    return _HEADER_CONTROLS.sub("", text)


def one_line(text: str) -> str:
    text = re.sub(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]", "", text)  # controls other than whitespace
    return valid_text(re.sub(r"[ \t\r\n\f\v]+", " ", text).strip())


def read_subject(headers: dict[str, list[str]], defects: Defects) -> str:
    values = headers.get("subject")
    return one_line(decode_words(values[0], defects)) if values else ""


def read_date(headers: dict[str, list[str]], defects: Defects) -> datetime | None:
    values = headers.get("date")
    if not values:
        return None
    try:
        value = parsedate_to_datetime(values[0].strip())
        if value.tzinfo is None:  # "-0000": UTC, source zone unknown (RFC 5322 3.3)
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except Exception:
        defects.add(f"unparsable Date {short(values[0])}")
        return None


_MSG_ID = re.compile(r"<([^<>]*)>")


def msg_ids(text: str) -> list[str]:
    """``<id@host>`` forms found in a Message-ID, In-Reply-To or References
    field; bare ``id@host`` tokens (a common mistake) when there are none."""
    ids = []
    for match in _MSG_ID.finditer(text):
        inner = "".join(match.group(1).split())
        if inner:
            ids.append(f"<{inner}>")
    if not ids:
        for token in re.sub(r"\([^()]*\)", " ", text).split():
            token = token.strip("<>,;\"'")
            if "@" in token:
                ids.append(f"<{token}>")
    return [valid_text(i) for i in ids]


def first_msg_id(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    ids = msg_ids(values[0]) if values else []
    return ids[0] if ids else None


def read_addresses(headers: dict[str, list[str]], name: str, defects: Defects) -> list[Address]:
    """The addresses of an address field, display names decoded; what is no
    address is a defect."""
    values = headers.get(name)
    if not values:
        return []
    try:
        found, skipped = read_address_list(", ".join(values))
    except Exception:
        defects.add(f"unparsable {name} header")
        return []
    for piece in skipped:
        defects.add(f"unparsable address in {name}: {short(piece)}")
    return [Address(valid_text(a.email), one_line(decode_words(a.name, defects))) for a in found]


def first_header(part: Message, name: str) -> str | None:
    values = raw_headers(part, {name}, Defects()).get(name)
    return values[0] if values else None


def parse_content_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    match = re.search(r"<([^<>]*)>", value)
    if match:
        value = match.group(1)
    value = "".join(value.split())
    return value or None


# -- RFC 2047 encoded-words ------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")


def decode_words(text: str, defects: Defects) -> str:
    """Decodes encoded-words anywhere in ``text``. Adjacent words separated
    only by whitespace are joined (RFC 2047 6.2), and their bytes are decoded
    together when they share a charset, since mailers split multi-byte
    characters across words."""
    if "=?" not in text:
        return text
    parts: list[str | tuple[str, bytearray]] = []
    pos = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        if gap and not (after_word and gap.strip(" \t") == ""):
            parts.append(gap)
        charset = match.group(1).partition("*")[0].lower()  # RFC 2231 5: "charset*lang"
        payload = match.group(3)
        if match.group(2) in "bB":
            data = b64decode(payload.encode("ascii", "ignore"), defects, "encoded-word")
        else:
            data = binascii.a2b_qp(payload.encode("utf-8", "replace"), header=True)
        last = parts[-1] if parts else None
        if isinstance(last, tuple) and last[0] == charset:
            last[1].extend(data)
        else:
            parts.append((charset, bytearray(data)))
        pos = match.end()
        after_word = True
    parts.append(text[pos:])
    return "".join(
        p if isinstance(p, str) else decode_bytes(bytes(p[1]), p[0], defects, "encoded-word")
        for p in parts
    )
