"""Building outgoing messages (RFC 5322, MIME RFC 2045-2049) and deriving the
text a reader shows. Pure: takes bytes and strings, returns bytes and strings.

No value given to ``compose`` can start a header field of its own: the send
flow refuses line breaks and controls in what users type (422), and
``compose`` itself writes every header value as one line without controls,
whatever it is given (an account name or a parent's Message-ID stored before
those checks), so the email package never sees a line break to refuse.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

import nh3

from mailfleet.proto.addresses import Address, format_address

SNIPPET_LENGTH = 200
# What no header value may hold: line breaks of any kind, other controls, and
# lone surrogates (no UTF-8).
_UNWRITABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# SMTP policy: CRLF line ends, lines folded at 78, non-ASCII headers encoded.
_POLICY = policy.SMTP.clone(max_line_length=78)


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes


def new_message_id(hostname: str) -> str:
    return f"<{secrets.token_hex(12)}@{hostname}>"


def compose(
    *,
    sender: Address,
    to: list[Address],
    cc: list[Address],
    subject: str,
    text: str | None,
    html: str | None,
    attachments: list[OutgoingAttachment],
    message_id: str,
    date: datetime,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
) -> bytes:
    """The message as recipients see it. Bcc is never written: recipients are
    carried by the envelope, so no copy can leak them (RFC 5322 section 3.6.3
    allows either; hiding them from everyone is the only private choice)."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address_field([sender])
    if to:
        msg["To"] = _address_field(to)
    if cc:
        msg["Cc"] = _address_field(cc)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = _one_line(message_id)
    if in_reply_to:
        msg["In-Reply-To"] = _one_line(in_reply_to)
    if references:
        msg["References"] = _one_line(" ".join(references))
    msg["MIME-Version"] = "1.0"
    if text is None and html is not None:
        text = html_to_text(html)
    msg.set_content(text or "", cte=_text_cte(text or ""))
    if html is not None:
        msg.add_alternative(html, subtype="html", cte=_text_cte(html))
    for att in attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            att.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=_one_line(att.filename) or "attachment",
        )
    return msg.as_bytes()


def _one_line(value: str) -> str:
    return " ".join(_UNWRITABLE.sub(" ", value).split())


def _address_field(addresses: list[Address]) -> str:
    return ", ".join(format_address(Address(a.email, _one_line(a.name))) for a in addresses)


def _text_cte(text: str) -> str:
    # quoted-printable keeps mostly-ASCII text readable and 7-bit clean; long
    # lines would otherwise break SMTP's 998-octet limit.
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


_TAG = re.compile(r"<[^>]*>")
_BLOCK = re.compile(r"</?(p|div|br|li|tr|h[1-6]|blockquote|table)\b[^>]*>", re.IGNORECASE)
_DROP = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_to_text(html: str) -> str:
    """Readable plain text from HTML, for the ``body`` of HTML-only mail."""
    text = _DROP.sub("", html)
    text = _BLOCK.sub("\n", text)
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def snippet(text: str, length: int = SNIPPET_LENGTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1].rstrip() + "…"


# Tags and attributes a mail reader needs; no scripts, forms, frames or styles
# that can load remote content beyond images (the webmail's CSP governs those).
_ALLOWED_TAGS = nh3.ALLOWED_TAGS | {"font", "center", "span", "div", "img", "table"}
_ALLOWED_ATTRIBUTES = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"align", "dir", "lang", "title"},
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "font": {"color", "face", "size"},
    "td": {"colspan", "rowspan", "align", "valign", "width"},
    "th": {"colspan", "rowspan", "align", "valign", "width"},
    "table": {"width", "border", "cellpadding", "cellspacing", "align"},
}


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        # cid: names a part of the same mail (RFC 2392), which the reader
        # shows in its place; it reaches nothing outside the mail. No data:
        # (a data:text/html link is a page the sender wrote, and the reader's
        # frame admits data: images only as the reader's own, size-capped,
        # stand-ins for cid: parts).
        url_schemes={"http", "https", "mailto", "cid"},
        link_rel="noopener noreferrer nofollow",
    )
