"""Delivery status notifications: the bounce (or delay warning) a sender gets
back when a message cannot be delivered. Pure: values in, message bytes out.

The message is a ``multipart/report; report-type=delivery-status`` (RFC 6522
section 3) of three parts:

1. ``text/plain``: what happened, in plain words, for the person;
2. ``message/delivery-status`` (RFC 3464 section 2): one per-message block
   (``Reporting-MTA``, ``Arrival-Date``; section 2.2) then one block per
   recipient (``Final-Recipient``, ``Action``, ``Status``, ``Remote-MTA``,
   ``Diagnostic-Code``; section 2.3), status codes as in RFC 3463;
3. ``text/rfc822-headers``: the headers of the original message (RFC 6522),
   never its body.

It is sent from the postmaster with the null reverse-path by whoever delivers
it, and carries ``Auto-Submitted: auto-replied`` (RFC 3834 section 5) so that
no responder answers it. When an address, a diagnostic or the original headers
are not ASCII (SMTPUTF8 mail), the internationalized forms of RFC 6533 are used
instead: ``message/global-delivery-status`` with the ``utf-8`` address type
(RFC 6533 section 3) and ``message/global-headers``, in a message whose own
headers are UTF-8 (RFC 6532).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")  # RFC 3464 section 2.3.3
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 section 2
_SMTP_REPLY = re.compile(r"[245]\d\d(?:[ -]|$)")
_MSG_ID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_CRLF = "\r\n"
_FOLD_AT = 78
_MAX_WORD = 900  # octets: a line of one word and its indent stays under 998 (RFC 5322 2.1.1)

# Lines folded at 78; field blocks we render ourselves are written as given.
_ASCII_POLICY = policy.SMTP.clone(max_line_length=_FOLD_AT, refold_source="none")
_UTF8_POLICY = policy.SMTPUTF8.clone(max_line_length=_FOLD_AT, refold_source="none")

FAILED_SUBJECT = "Undelivered Mail Returned to Sender"
DELAYED_SUBJECT = "Delayed Mail (still being retried)"


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    email: str
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    diagnostic: str  # the remote reply, e.g. "550 5.1.1 <x@y>: user unknown"
    remote_mta: str | None  # the host that answered, when one did
    action: str = "failed"  # or "delayed" (RFC 3464 section 2.3.3)


def build_dsn(
    *,
    reporting_mta: str,
    postmaster: str,
    original_mail_from: str,
    original_headers: bytes,
    recipients: list[FailedRecipient],
    arrival_date: datetime,
    message_id: str,
    date: datetime,
) -> bytes:
    """The DSN for ``recipients`` of one message, as CRLF bytes, addressed to
    ``original_mail_from`` (never call this for a message whose reverse-path
    was null: bounces are not bounced, RFC 5321 section 4.5.5)."""
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    if not original_mail_from.strip():
        raise ValueError("no DSN for a message with a null reverse-path")
    for r in recipients:
        if r.action not in ACTIONS:
            raise ValueError(f"invalid DSN action {r.action!r}; expected one of {ACTIONS}")
        if not _STATUS.fullmatch(r.status):
            raise ValueError(f"invalid status code {r.status!r}; expected like 5.1.1")

    headers = _header_block(original_headers)
    diagnostics = [_one_line(r.diagnostic) for r in recipients]
    international = not (
        headers.isascii()
        and all(r.email.isascii() and (r.remote_mta or "").isascii() for r in recipients)
        and all(d.isascii() for d in diagnostics)
        and original_mail_from.isascii()
        and reporting_mta.isascii()
    )
    pol = _UTF8_POLICY if international else _ASCII_POLICY
    original = BytesHeaderParser(policy=policy.default).parsebytes(original_headers)

    msg = EmailMessage(policy=pol)
    local, _, domain = postmaster.rpartition("@")
    msg["From"] = HeaderAddress(display_name="Mail Delivery System", username=local, domain=domain)
    msg["To"] = original_mail_from
    only_delayed = all(r.action == "delayed" for r in recipients)
    msg["Subject"] = DELAYED_SUBJECT if only_delayed else FAILED_SUBJECT
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    original_id = _MSG_ID.search(str(original.get("Message-ID", "")))
    if original_id:
        # Threads the bounce with the message it is about.
        msg["In-Reply-To"] = original_id.group()
        msg["References"] = original_id.group()
    msg["Auto-Submitted"] = "auto-replied"
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/report; report-type=delivery-status"

    text = _explanation(
        reporting_mta, recipients, diagnostics, arrival_date, str(original.get("Subject", ""))
    )
    explanation = MIMEPart(policy=pol)
    explanation.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    explanation["Content-Description"] = "Notification"

    blocks = [_per_message_block(reporting_mta, arrival_date)]
    blocks += [_recipient_block(r, d) for r, d in zip(recipients, diagnostics, strict=True)]
    status = MIMEPart(policy=pol)
    if international:
        status["Content-Type"] = "message/global-delivery-status"
        status["Content-Transfer-Encoding"] = "8bit"
        status.set_payload([_as_message(_CRLF.join(blocks).encode("utf-8"), pol)])
    else:
        status["Content-Type"] = "message/delivery-status"
        status.set_payload([_as_message(block.encode("ascii"), pol) for block in blocks])
    status["Content-Description"] = "Delivery report"

    returned = MIMEPart(policy=pol)
    if headers.isascii():
        returned["Content-Type"] = "text/rfc822-headers"
        returned["Content-Transfer-Encoding"] = "7bit"
        returned.set_payload(headers.decode("ascii"))
    else:
        returned["Content-Type"] = "message/global-headers"
        returned["Content-Transfer-Encoding"] = "8bit"
        returned.set_payload([_as_message(headers, pol)])
    returned["Content-Description"] = "Undelivered message headers"

    msg.set_payload([explanation, status, returned])
    return msg.as_bytes()


def _per_message_block(reporting_mta: str, arrival_date: datetime) -> str:
    return _field("Reporting-MTA", f"dns; {_one_line(reporting_mta)}") + _field(
        "Arrival-Date", format_datetime(arrival_date)
    )


def _recipient_block(r: FailedRecipient, diagnostic: str) -> str:
    email = _one_line(r.email)
    address_type = "rfc822" if email.isascii() else "utf-8"  # RFC 6533 section 3
    block = _field("Final-Recipient", f"{address_type}; {email}")
    block += _field("Action", r.action)
    block += _field("Status", r.status)
    if r.remote_mta:
        block += _field("Remote-MTA", f"dns; {_one_line(r.remote_mta)}")
    if diagnostic:
        # RFC 3464 section 2.3.6: "smtp" for a server's reply; our own reasons
        # (DNS, connection, expiry) get an extension type.
        kind = "smtp" if _SMTP_REPLY.match(diagnostic) else "X-Mailfleet"
        block += _field("Diagnostic-Code", f"{kind}; {diagnostic}")
    return block


def _field(name: str, value: str) -> str:
    """``Name: value`` CRLF, folded at spaces to lines of at most 78 characters
    where words allow; unfolding (removing each CRLF) gives the value back."""
    words: list[str] = []
    for word in value.split(" "):
        words += _split_word(word)
    lines: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(words):
        if i > 0 and len(line) + 1 + len(word) > _FOLD_AT:
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return _CRLF.join(lines) + _CRLF


def _split_word(word: str) -> list[str]:
    """A word longer than a line allows, cut into pieces (unfolding then shows
    a space at each cut: no better is possible within the line limit)."""
    pieces = [""]
    for char in word:
        if len(pieces[-1].encode()) + len(char.encode()) > _MAX_WORD:
            pieces.append("")
        pieces[-1] += char
    return pieces


def _one_line(text: str) -> str:
    """Control characters (line breaks of multi-line SMTP replies included)
    become single spaces; a DSN field is one logical line of text."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _header_block(raw: bytes) -> bytes:
    """The header section of ``raw`` (a body, if given, is cut off), as lines
    ending in CRLF."""
    end = len(raw)
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(separator)
        if at != -1:
            end = min(end, at)
    lines = raw[:end].replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(line + b"\r\n" for line in lines if line)


def _as_message(data: bytes, pol: policy.EmailPolicy[EmailMessage]) -> EmailMessage:
    """Header fields (and a body) as a Message the generator writes back as
    these very octets: what it keeps for message/* and delivery-status parts."""
    return BytesParser(policy=pol).parsebytes(data)


# RFC 3463: "class.subject.detail"; the subject and detail say what failed.
_REASONS = {
    "1.1": "the mailbox does not exist",
    "1.2": "the recipient's domain does not exist or has no mail server",
    "1.3": "the address is not valid",
    "1.6": "the mailbox has moved",
    "1.10": "the recipient's domain accepts no mail",
    "2.1": "the mailbox is disabled",
    "2.2": "the mailbox is full",
    "2.3": "the message is larger than the recipient accepts",
    "3.4": "the message is larger than the receiving system accepts",
    "4.1": "the receiving server did not answer",
    "4.2": "the connection to the receiving server was lost",
    "4.3": "the recipient's mail server could not be looked up",
    "4.4": "no route to the recipient's mail server",
    "4.7": "delivery took too long and was given up",
    "6.7": "the recipient's server does not accept international addresses",
}
_SUBJECTS = {
    "0": "it was refused",
    "1": "the address was refused",
    "2": "the mailbox refused it",
    "3": "the receiving mail system refused it",
    "4": "the recipient's mail server could not be reached",
    "5": "the receiving server refused it",
    "6": "the receiving server refused its content",
    "7": "the receiving server refused it for security or policy reasons, "
    "for example because it looked like spam",
}


def _reason(status: str) -> str:
    _, subject, detail = status.split(".")
    key = f"{int(subject)}.{int(detail)}"
    return _REASONS.get(key) or _SUBJECTS.get(str(int(subject)), _SUBJECTS["0"])


def _explanation(
    reporting_mta: str,
    recipients: list[FailedRecipient],
    diagnostics: list[str],
    arrival_date: datetime,
    subject: str,
) -> str:
    paragraphs = [f"This is the mail system at {_one_line(reporting_mta)}."]
    about = f"Your message of {format_datetime(arrival_date)}"
    subject = _one_line(subject)
    if subject:
        about += f' with the subject "{subject}"'
    for action, intro in (
        (
            "failed",
            "could not be delivered to the recipients below. It will not be sent "
            "again; check the address, or send it again later if the reason given "
            "is temporary.",
        ),
        (
            "delayed",
            "has not been delivered yet to the recipients below. The mail system "
            "keeps trying and will tell you if it gives up; you do not need to "
            "send it again.",
        ),
    ):
        group = [(r, d) for r, d in zip(recipients, diagnostics, strict=True) if r.action == action]
        if not group:
            continue
        paragraphs.append(_wrap(f"{about} {intro}"))
        for r, diagnostic in group:
            entry = [_wrap(f"{_one_line(r.email)}: {_reason(r.status)} (status {r.status}).", 2)]
            if diagnostic and r.remote_mta:
                entry.append(_wrap(f"The server {_one_line(r.remote_mta)} answered:", 4))
                entry.append(_wrap(diagnostic, 6))
            elif diagnostic:
                entry.append(_wrap(f"Reason: {diagnostic}", 4))
            paragraphs.append("\n".join(entry))
    for r in recipients:
        if r.action not in ("failed", "delayed"):
            paragraphs.append(_wrap(f"{_one_line(r.email)}: {r.action} (status {r.status}).", 2))
    paragraphs.append("The headers of your message are attached.")
    return "\n\n".join(paragraphs) + "\n"


def _wrap(text: str, indent: int = 0) -> str:
    pad = " " * indent
    return textwrap.fill(
        text, width=76, initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False
    )
