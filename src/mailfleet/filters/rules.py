"""Built-in spam rules: no service needed, always on.

Each rule looks at one mail and may add a ``Reason``; the scores follow
SpamAssassin's spirit (a rule alone rarely makes spam, GTUBE always does).
Names are rspamd-style symbols, so the reasons read the same whichever
scorer gave them. Attachment types are not scored here: the attachment
policy (``attachments.py``) decides on them, with a verdict of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from urllib.parse import urlsplit

from mailfleet.filters import FilterResult, MailToCheck, Reason

# The Generic Test for Unsolicited Bulk Email (SpamAssassin's GTUBE).
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

SHORTENERS = frozenset(
    [
        "bit.ly",
        "tinyurl.com",
        "t.co",
        "goo.gl",
        "ow.ly",
        "is.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "tiny.cc",
        "rb.gy",
        "t.ly",
        "s.id",
        "v.gd",
        "qr.ae",
        "bl.ink",
        "lnkd.in",
    ]
)
_URL = re.compile(r"""https?://[^\s"'<>()]+""", re.IGNORECASE)
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d])", re.IGNORECASE
)
_ADDRESS_IN_NAME = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _is_ip_literal(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def gtube(mail: MailToCheck) -> Iterator[Reason]:
    if GTUBE in mail.raw:
        yield Reason("GTUBE", 1000.0, "the anti-spam test string")


def missing_headers(mail: MailToCheck) -> Iterator[Reason]:
    if mail.parsed.date is None:
        yield Reason("MISSING_DATE", 1.0, "no valid Date header")
    if mail.parsed.message_id is None:
        yield Reason("MISSING_MID", 1.0, "no Message-ID header")


def from_name_mismatch(mail: MailToCheck) -> Iterator[Reason]:
    """A display name that is itself an address other than the sender's
    ("service@bank.example" <x@elsewhere>), and a Reply-To elsewhere
    alongside a display name: phishing's two disguises."""
    sender = mail.parsed.sender
    if sender is None:
        return
    shown = _ADDRESS_IN_NAME.search(sender.name or "")
    if shown and shown.group(0).lower() != sender.email.lower():
        yield Reason("FROM_NAME_HAS_OTHER_ADDRESS", 3.0, f"display name shows {shown.group(0)}")
    sender_domain = sender.email.rpartition("@")[2].lower()
    for reply_to in mail.parsed.reply_to:
        if sender.name and reply_to.email.rpartition("@")[2].lower() != sender_domain:
            yield Reason("REPLYTO_DOMAIN_DIFFERS", 1.0, f"replies go to {reply_to.email}")
            break


def caps_subject(mail: MailToCheck) -> Iterator[Reason]:
    letters = [c for c in mail.parsed.subject if c.isalpha()]
    if len(letters) >= 10 and all(c.isupper() for c in letters):
        yield Reason("SUBJ_ALL_CAPS", 1.5, "the subject shouts")


def html_only(mail: MailToCheck) -> Iterator[Reason]:
    parsed = mail.parsed
    if parsed.html_source is None or parsed.has_plain:
        return
    yield Reason("MIME_HTML_ONLY", 0.5, "HTML without a text part")
    if _HIDDEN_STYLE.search(parsed.html_source):
        yield Reason("HTML_HIDDEN_TEXT", 2.5, "text styled not to be seen")


def links(mail: MailToCheck) -> Iterator[Reason]:
    sources = [mail.parsed.text, mail.parsed.html_source or ""]
    hosts = {_host(url) for source in sources for url in _URL.findall(source)}
    shortened = sorted(hosts & SHORTENERS)
    if shortened:
        yield Reason("URL_SHORTENER", 1.5, f"links through {', '.join(shortened)}")
    literal = sorted(h for h in hosts if _is_ip_literal(h.strip("[]")))
    if literal:
        yield Reason("URL_IP_LITERAL", 2.5, f"links to {', '.join(literal[:3])}")


RULES: tuple[Callable[[MailToCheck], Iterator[Reason]], ...] = (
    gtube,
    missing_headers,
    from_name_mismatch,
    caps_subject,
    html_only,
    links,
)


class BuiltinRules:
    name = "builtin"

    async def check(self, mail: MailToCheck) -> FilterResult:
        reasons = tuple(reason for rule in RULES for reason in rule(mail))
        # Scores only: the pipeline's thresholds make the verdict.
        return FilterResult(sum(r.score for r in reasons), reasons)
