"""The formats mail clients keep mail in on disk: mbox and Maildir, as
Thunderbird, Gmail's Takeout, Dovecot, mutt and Python's ``mailbox`` write
them. Pure functions over bytes and strings (``mailfleet.transfer`` does the
file I/O); nothing else of mailfleet is imported.

- mbox (RFC 4155): each message starts with a ``From_`` line
  (``From sender asctime-date``) after a blank line; body lines that would
  start a message are quoted. We read and write *mboxrd*: a line matching
  ``>*From `` gains one ``>`` when written and loses one when read, which is
  reversible (the older *mboxo* quoting of Python's ``mailbox`` and mutt is
  read the same way).
- Per-message state in mbox headers: ``Status`` (``R`` read, ``O`` old) and
  ``X-Status`` (``F`` flagged, ``A`` answered, ``T`` draft, ``D`` deleted)
  from mutt/Pine/Python's ``mboxMessage``; Thunderbird's ``X-Mozilla-Status``
  (hex: 0x1 read, 0x2 replied, 0x4 marked, 0x8 expunged); Gmail Takeout's
  ``X-Gmail-Labels`` (comma-separated labels, ``Unread``, ``Starred``,
  ``Inbox``, ``Sent``, ``Spam``, ``Trash``, user labels).
- Maildir (https://cr.yp.to/proto/maildir.html) and Maildir++ (Courier,
  Dovecot): ``cur/``, ``new/``, ``tmp/``; a file name's info ``:2,`` then
  flags in ASCII order (``D`` draft, ``F`` flagged, ``P`` passed, ``R``
  replied, ``S`` seen, ``T`` trashed); sub-folders as ``.Folder.Sub``
  directories of the root, names in IMAP's modified UTF-7 (RFC 3501 5.1.3).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Where our export keeps the exact received time (RFC 3339, ms): the
# From_ line holds whole seconds only.
RECEIVED_AT_HEADER = b"X-Mailfleet-Received-At"

# Headers that carry a mailbox's state, not the message: removed from the
# stored mail (state goes to flags and folders) and written back on export.
STATE_HEADERS = frozenset(
    {
        b"status",
        b"x-status",
        b"x-mozilla-status",
        b"x-mozilla-status2",
        b"x-mozilla-keys",
        b"x-gmail-labels",
        b"x-gm-thrid",
        RECEIVED_AT_HEADER.lower(),
    }
)

# The special folders' names in the clients we read, lower-cased, by role.
ROLE_NAMES: dict[str, frozenset[str]] = {
    "inbox": frozenset({"inbox"}),
    "sent": frozenset({"sent", "sent mail", "sent items", "sent messages"}),
    "drafts": frozenset({"drafts", "draft"}),
    "trash": frozenset({"trash", "deleted items", "deleted messages", "bin"}),
    "junk": frozenset({"junk", "spam", "junk e-mail", "junk email", "bulk mail"}),
    "archive": frozenset({"archive", "archives", "all mail"}),
}
# Prefixes clients put before the special folders' names.
_ROLE_PREFIXES = ("[gmail]/", "[google mail]/", "inbox/", "inbox.")

# Gmail labels that are state or categories, never a folder.
_GMAIL_STATE_LABELS = frozenset({"unread", "opened", "starred", "important"})
# Which of several Gmail labels decides the folder: the first present.
_GMAIL_ROLE_ORDER = ("trash", "spam", "drafts", "inbox", "sent")

MIN_TIME_MS = 0
_FROM_LINE_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(\w{3})\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    rb"(?:\s+([A-Z]{1,5}|[+-]\d{4}))?\s+(\d{4})"
)
_MONTHS = {
    m: i + 1 for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
}
_QUOTED_FROM = re.compile(rb"^>+From ")


@dataclass(frozen=True, slots=True)
class MailState:
    """A message's state as a mailbox file gives it."""

    seen: bool = False
    flagged: bool = False
    answered: bool = False
    draft: bool = False
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class MboxEntry:
    """One message of an mbox: its ``From_`` line (without the line end)
    and the message, unquoted, lines ending in LF as in the file."""

    from_line: bytes
    message: bytes


# -- line endings ---------------------------------------------------------------


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF, as mail is stored (RFC 5322 2.1)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def to_lf(data: bytes) -> bytes:
    """Every line ending as LF, as mbox files hold mail."""
    return data.replace(b"\r\n", b"\n")


# -- mbox ------------------------------------------------------------------------


def read_mbox(lines: Iterable[bytes]) -> Iterator[MboxEntry]:
    """The messages of an mbox given as its lines (a binary file object
    works). A ``From `` line starts a message at the top of the file or
    after a blank line; the blank line before it belongs to the file, not
    to the message. Text before the first ``From_`` line is ignored."""
    from_line: bytes | None = None
    body: list[bytes] = []
    previous_blank = True
    for line in lines:
        if line.startswith(b"From ") and previous_blank:
            if from_line is not None:
                yield MboxEntry(from_line, _message(body))
            from_line = line.rstrip(b"\r\n")
            body = []
            previous_blank = False
            continue
        previous_blank = line in (b"\n", b"\r\n")
        if from_line is None:
            continue
        if line.startswith(b">") and _QUOTED_FROM.match(line):
            line = line[1:]
        body.append(line)
    if from_line is not None:
        yield MboxEntry(from_line, _message(body))


def _message(lines: list[bytes]) -> bytes:
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]  # the separator before the next From_ line
    data = b"".join(lines)
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def count_mbox(chunks: Iterable[bytes]) -> int:
    """Roughly how many messages an mbox holds (for a progress bar): its
    ``From `` lines at the top or after a blank line, over blocks of it."""
    count, tail, first = 0, b"", True
    for chunk in chunks:
        data = tail + chunk
        if first:
            count += data.startswith(b"From ")
            first = False
        count += data.count(b"\n\nFrom ")
        tail = data[-6:]
        count -= tail.count(b"\n\nFrom ")  # counted again with the next block
    return count


def mbox_quote(message: bytes) -> bytes:
    """A message (LF line ends) as an mbox holds it: mboxrd quoting of every
    line that matches ``>*From ``, and a final line end."""
    if b"From " in message:
        message = b"\n".join(
            b">" + line if line.lstrip(b">").startswith(b"From ") else line
            for line in message.split(b"\n")
        )
    if not message.endswith(b"\n"):
        message += b"\n"
    return message


def from_line(sender: str | None, at_ms: int) -> bytes:
    """A ``From_`` line for a message received at ``at_ms`` (UTC asctime, as
    RFC 4155 suggests)."""
    when = datetime.fromtimestamp(at_ms / 1000, UTC)
    who = sender if sender and " " not in sender and sender.isascii() else "MAILER-DAEMON"
    return f"From {who} {when.strftime('%a %b %d %H:%M:%S %Y')}".encode()


def from_line_time(line: bytes) -> int | None:
    """When a ``From_`` line says the message arrived, in ms (UTC when it
    names no zone, as most writers mean), or None."""
    found = _FROM_LINE_DATE.search(line)
    if found is None:
        return None
    month = _MONTHS.get(found.group(1))
    if month is None:
        return None
    zone = found.group(6)
    try:
        when = datetime(
            int(found.group(7)),
            month,
            int(found.group(2)),
            int(found.group(3)),
            int(found.group(4)),
            int(found.group(5) or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    ms = int(when.timestamp() * 1000)
    if zone and zone[:1] in b"+-":
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60_000
        ms -= offset if zone[:1] == b"+" else -offset
    return ms


# -- headers ---------------------------------------------------------------------


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """The header section (with its line ends) and the rest (from the blank
    line on)."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw
    ends = [(raw.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n")]
    found = [(at, sep) for at, sep in ends if at >= 0]
    if not found:
        return raw, b""
    at, sep = min(found)
    cut = at + len(sep) // 2
    return raw[:cut], raw[cut:]


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """The header section's fields as (lower-case name, raw field with its
    continuation lines and line ends)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, field = fields[-1]
            fields[-1] = (name, field + line)
            continue
        name, colon, _ = line.partition(b":")
        fields.append((name.strip().lower() if colon else b"", line))
    return fields


def field_value(field: bytes) -> str:
    """A raw field's value, unfolded, as text (undecodable bytes replaced)."""
    value = field.partition(b":")[2]
    return re.sub(r"\r?\n[ \t]+", " ", value.decode("utf-8", "replace")).strip()


def strip_state(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """The message without its mailbox-state headers (``STATE_HEADERS``),
    and their values by lower-case name."""
    header, rest = split_header(raw)
    kept: list[bytes] = []
    state: dict[str, str] = {}
    for name, field in header_fields(header):
        if name in STATE_HEADERS:
            state.setdefault(name.decode(), field_value(field))
        else:
            kept.append(field)
    if not state:
        return raw, state
    return b"".join(kept) + rest, state


def mbox_state(state: dict[str, str]) -> MailState:
    """Flags from mbox state headers: Status/X-Status, X-Mozilla-Status,
    X-Gmail-Labels (whichever are present; any that says "read" or
    "flagged" wins)."""
    status = state.get("status", "")
    x_status = state.get("x-status", "")
    seen = "R" in status
    flagged = "F" in x_status
    answered = "A" in x_status
    draft = "T" in x_status
    deleted = "D" in x_status
    mozilla = state.get("x-mozilla-status")
    if mozilla:
        try:
            bits = int(mozilla, 16)
        except ValueError:
            bits = 0
        seen |= bool(bits & 0x1)
        answered |= bool(bits & 0x2)
        flagged |= bool(bits & 0x4)
        deleted |= bool(bits & 0x8)
    labels = state.get("x-gmail-labels")
    if labels is not None:
        names = {label.casefold() for label in gmail_labels(labels)}
        seen |= "unread" not in names
        flagged |= "starred" in names
    return MailState(seen, flagged, answered, draft, deleted)


def status_headers(seen: bool, flagged: bool, received_ms: int) -> bytes:
    """The state lines an export writes (LF ends): ``Status``, ``X-Status``
    and the exact received time."""
    lines = b"Status: RO\n" if seen else b"Status: O\n"
    if flagged:
        lines += b"X-Status: F\n"
    when = datetime.fromtimestamp(received_ms / 1000, UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{received_ms % 1000:03d}Z"
    return lines + RECEIVED_AT_HEADER + b": " + stamp.encode() + b"\n"


def received_at_state(state: dict[str, str]) -> int | None:
    """The received time an export of ours wrote (``RECEIVED_AT_HEADER``)."""
    value = state.get(RECEIVED_AT_HEADER.decode().lower())
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return int(when.timestamp() * 1000)


def gmail_labels(value: str) -> list[str]:
    """Takeout's label list: comma-separated, a label with a comma quoted."""
    labels, current, quoted = [], "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            labels.append(current.strip())
            current = ""
        else:
            current += ch
    labels.append(current.strip())
    return [label for label in labels if label]


def gmail_folder(value: str) -> str:
    """The one folder a Takeout message goes to: Trash, Spam, Drafts,
    Inbox, Sent in that order, else its first user label, else Archive
    (Gmail's "All Mail" without Inbox is archived mail)."""
    labels = gmail_labels(value)
    folded = {label.casefold(): label for label in labels}
    for role in _GMAIL_ROLE_ORDER:
        if role in folded:
            return folded[role]
    for label in labels:
        low = label.casefold()
        if low in _GMAIL_STATE_LABELS or low.startswith("category "):
            continue
        return label
    return "Archive"


# -- dates -----------------------------------------------------------------------


def header_time(raw: bytes) -> int | None:
    """When the message was received by the header's account: the date of
    the topmost ``Received`` field (the last hop), else the ``Date`` field;
    in ms, or None when neither is a usable date."""
    header, _ = split_header(raw)
    received = date = None
    for name, field in header_fields(header):
        if name == b"received" and received is None:
            received = field_value(field).rpartition(";")[2]
        elif name == b"date" and date is None:
            date = field_value(field)
    for value in (received, date):
        ms = _date_ms(value)
        if ms is not None:
            return ms
    return None


def _date_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        ms = int(when.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return None
    return ms if ms > MIN_TIME_MS else None


# -- Maildir ---------------------------------------------------------------------


def maildir_state(file_name: str) -> MailState:
    """Flags from a Maildir file name's info (``:2,FS``; ``!2,`` where file
    systems forbid colons); no info (mail still in ``new/``) is unread."""
    _, sep, flags = file_name.rpartition(":2,")
    if not sep:
        _, sep, flags = file_name.rpartition("!2,")
    if not sep:
        flags = ""
    return MailState(
        seen="S" in flags,
        flagged="F" in flags,
        answered="R" in flags,
        draft="D" in flags,
        deleted="T" in flags,
    )


def maildirpp_folder(directory: str) -> str:
    """A Maildir++ sub-folder directory's name (``.Work.Clients``) as a
    folder name (``Work/Clients``), modified UTF-7 decoded."""
    parts = directory.lstrip(".").split(".")
    return "/".join(decode_imap_utf7(part) for part in parts)


def decode_imap_utf7(name: str) -> str:
    """IMAP's modified UTF-7 (RFC 3501 5.1.3): ``&`` starts base64 of
    UTF-16 with ``,`` for ``/``, ``-`` ends it, ``&-`` is ``&``. A name that
    is not valid modified UTF-7 is kept as it is."""
    if "&" not in name:
        return name
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            return name
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            try:
                out.append(base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                return name
        i = end + 1
    return "".join(out)


# -- folder names ----------------------------------------------------------------


def role_for(name: str) -> str | None:
    """The special folder a client's folder name means (``Sent Items`` is
    ``sent``, ``[Gmail]/Spam`` is ``junk``), or None for the user's own."""
    low = name.strip().casefold()
    for prefix in _ROLE_PREFIXES:
        if low.startswith(prefix) and low != prefix.rstrip("/."):
            low = low[len(prefix) :]
            break
    for role, names in ROLE_NAMES.items():
        if low in names:
            return role
    return None


# Characters a file name may not hold on common file systems, or that
# would change its meaning: quoted as %XX by file_name_for.
_UNSAFE = set('/\\:*?"<>|%') | {chr(c) for c in range(32)} | {"\x7f"}


def file_name_for(folder: str) -> str:
    """A folder name as a file name: ``%XX`` for the characters a file name
    cannot hold (``/`` of nested names included), a leading dot and
    trailing dots and spaces; other characters (UTF-8) kept."""
    out = [f"%{ord(ch):02X}" if ch in _UNSAFE else ch for ch in folder]
    if out and out[0] == ".":
        out[0] = "%2E"
    for i in range(len(out) - 1, -1, -1):
        if out[i] not in (".", " "):
            break
        out[i] = f"%{ord(out[i]):02X}"
    return "".join(out) or "%00"


def folder_for_file(stem: str) -> str:
    """``file_name_for`` undone: ``%XX`` back to its character."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), stem)
