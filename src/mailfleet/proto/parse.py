"""Reading received mail: the raw bytes of any Internet message in, what a mail
reader shows out.

Owns the interpretation of inbound messages: the header fields of RFC 5322
(with the UTF-8 header fields of RFC 6532), the MIME structure, transfer
encodings and charsets of RFC 2045-2049, the encoded-words of RFC 2047 and the
parameter value continuations and charsets of RFC 2231. Pure: bytes in, a
``ParsedMessage`` out, no I/O.

``parse_message`` never raises. Every mail must be delivered with what can be
read, so broken input (bad MIME, unknown or wrong charsets, 8-bit garbage,
truncation, absurd nesting) is read as far as it goes, and what was wrong is
listed in ``defects``. The stdlib ``email`` package splits the MIME structure;
header fields, parameters, transfer encodings and charsets are decoded here,
because the stdlib raises or loses text on too many real-world inputs.
"""

from __future__ import annotations

import binascii
import codecs
import email
import functools
import html as html_lib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from mailfleet.proto.addresses import Address
from mailfleet.proto.compose import html_to_text, sanitize_html

MAX_DEPTH = 100  # multipart levels below the message that are read
MAX_PARTS = 1000  # MIME parts read in one message
MAX_DEFECTS = 50  # defects listed; the rest are counted
# An HTML body is cut where its element nesting (or the total work of a
# parser whose cost grows with nesting) passes these: the sanitizer's HTML
# parser is quadratic in nesting depth, and a mail of nested <div>s would
# otherwise stall the worker for minutes.
MAX_HTML_DEPTH = 5_000
MAX_HTML_WORK = 50_000_000


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    filename: str  # decoded, directory-free, never empty
    content_type: str  # lower-case "type/subtype"
    data: bytes  # transfer encoding undone; a message/rfc822 part's inner message
    content_id: str | None  # without angle brackets
    inline: bool  # shown inside the body (cid: reference) rather than listed


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


def parse_message(raw: bytes) -> ParsedMessage:
    """What a reader shows of ``raw``. Never raises."""
    defects = _Defects()
    try:
        return _parse(bytes(raw), defects)
    except Exception as exc:  # the last line of defence: a bug here must not lose mail
        defects.add(f"parser failure ({type(exc).__name__}); the message is shown as raw text")
        try:
            text = _normalize_text(_decode_bytes(bytes(raw), None, defects, "message"), defects)
        except Exception:
            text = ""
        return ParsedMessage(
            "", None, (), (), (), None, None, (), None, text, None, (), defects.all()
        )


# -- defects ---------------------------------------------------------------------


class _Defects:
    """Short descriptions, each once, in order of discovery, at most MAX_DEFECTS."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}
        self._more: set[str] = set()

    def add(self, text: str) -> None:
        if text in self._seen:
            return
        if len(self._seen) < MAX_DEFECTS:
            self._seen[text] = None
        elif len(self._more) < 10_000:
            self._more.add(text)

    def all(self) -> tuple[str, ...]:
        listed = [_valid_text(d) for d in self._seen]
        if self._more:
            listed.append(f"{len(self._more)} more defects not listed")
        return tuple(listed)


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _describe(defect: object) -> str:
    """``StartBoundaryNotFoundDefect`` -> "start boundary not found"."""
    name = type(defect).__name__.removesuffix("Defect")
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


# -- the whole message -----------------------------------------------------------


def _parse(raw: bytes, defects: _Defects) -> ParsedMessage:
    linesep = b"\r\n" if b"\r\n" in raw else b"\n"
    msg = _load(_limit_nesting(raw, defects), defects)
    headers = _top_headers(msg, defects)

    walker = _Walker(defects, linesep)
    plain, html_source = walker.visit(msg, 0, "text/plain")
    html = _sanitize(html_source, defects) if html_source is not None else None
    if plain is not None:
        text = plain
    elif html:
        text = html_to_text(html)
    else:
        text = ""

    sender = _addresses(headers, "from", defects)
    references = tuple(dict.fromkeys(_msg_ids(" ".join(headers.get("references", [])))))
    return ParsedMessage(
        subject=_subject(headers, defects),
        sender=sender[0] if sender else None,
        to=tuple(_addresses(headers, "to", defects)),
        cc=tuple(_addresses(headers, "cc", defects)),
        reply_to=tuple(_addresses(headers, "reply-to", defects)),
        message_id=_first_msg_id(headers, "message-id"),
        in_reply_to=_first_msg_id(headers, "in-reply-to"),
        references=references,
        date=_date(headers, defects),
        text=_normalize_text(text, defects),
        html=html,
        attachments=tuple(walker.attachments),
        defects=defects.all(),
    )


def _load(raw: bytes, defects: _Defects) -> Message:
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


# -- nesting bound, before the stdlib parser sees the bytes ----------------------

# The stdlib parser recurses once per nested multipart or message/* part (and
# raises RecursionError near 1000 levels) and checks every line against every
# enclosing boundary, so deep nesting is both a crash and quadratic. This
# scanner follows the same structure line by line, without recursion, and
# turns the Content-Type of any part nested deeper than the limit into
# application/octet-stream: that part's subtree becomes one opaque leaf, and
# the parts after it are still read.

_NEST_LIMIT = MAX_DEPTH + 2  # one level past what the walker reads, so it notes the cut
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")  # the stdlib's headerRE
_DEEP = f"MIME nesting deeper than {MAX_DEPTH} levels; deeper parts were skipped"


def _limit_nesting(raw: bytes, defects: _Defects) -> bytes:
    lower = raw.lower()
    if (lower.count(b"multipart/") + lower.count(b"message/")) * 2 < _NEST_LIMIT:
        return raw  # cannot nest that deep (digests imply one message level per part)
    stack: list[tuple[bytes | None, bool]] = []  # (boundary, is digest); None: message/*
    in_headers = True
    child_of_digest = False
    ctype: bytes | None = None
    ct_span = (0, 0)
    in_ct = False
    splices: list[tuple[int, int]] = []
    offset = 0
    for line in raw.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        while True:  # a line may end a header block and then be read as body
            if in_headers:
                if line[:1] not in (b"\r", b"\n") and _HEADER_LINE.match(line):
                    if line[:1] in (b" ", b"\t"):
                        if in_ct and ctype is not None:
                            ctype += line
                            ct_span = (ct_span[0], offset)
                    elif ctype is None and line[:13].lower() == b"content-type:":
                        ctype, ct_span, in_ct = line[13:], (start, offset), True
                    else:
                        in_ct = False
                    break
                in_headers = False
                maintype, subtype, boundary = _scan_type(ctype, child_of_digest)
                nested = maintype == b"multipart" and boundary is not None
                nested = nested or (maintype == b"message" and subtype != b"delivery-status")
                if nested and len(stack) >= _NEST_LIMIT:
                    splices.append(ct_span if ctype is not None else (start, start))
                elif maintype == b"multipart" and boundary is not None:
                    stack.append((boundary, subtype == b"digest"))
                elif nested:
                    stack.append((None, False))
                    in_headers, child_of_digest = True, False
                ctype, in_ct = None, False
                if line[:1] in (b"\r", b"\n"):
                    break  # the blank line ending the headers
                continue
            if line[:2] == b"--":
                for level in range(len(stack) - 1, -1, -1):
                    boundary = stack[level][0]
                    if boundary is None or not line.startswith(boundary, 2):
                        continue
                    rest = line[2 + len(boundary) :]
                    closing = rest[:2] == b"--"
                    if rest[2 if closing else 0 :].rstrip(b"\r\n").strip(b" \t"):
                        continue
                    child_of_digest = stack[level][1]
                    del stack[level + (1 if not closing else 0) :]
                    in_headers = not closing
                    break
            break
    if not splices:
        return raw
    defects.add(_DEEP)
    out = bytearray()
    last = 0
    for begin, end in splices:
        eol = b"\r\n" if raw[begin:end].endswith(b"\r\n") else b"\n"
        out += raw[last:begin] + b"Content-Type: application/octet-stream" + eol
        last = end
    out += raw[last:]
    return bytes(out)


def _scan_type(ctype: bytes | None, child_of_digest: bool) -> tuple[bytes, bytes, bytes | None]:
    if ctype is None:
        return (b"message", b"rfc822", None) if child_of_digest else (b"text", b"plain", None)
    value = ctype.split(b";", 1)[0].strip().lower()
    if value.count(b"/") != 1:
        return b"text", b"plain", None
    maintype, _, subtype = value.partition(b"/")
    boundary = None
    if maintype == b"multipart":
        _, params = _params(_bytes_text(re.sub(rb"\r\n|\r|\n", b"", ctype)), _Defects())
        if params.get("boundary"):
            boundary = params["boundary"].rstrip().encode("utf-8", "surrogateescape")
    return maintype, subtype, boundary


# -- the MIME tree ---------------------------------------------------------------

_Body = tuple[str | None, str | None]  # (text/plain, text/html source) found in a subtree


class _Walker:
    """Visits the MIME tree once: finds the body, collects the attachments."""

    def __init__(self, defects: _Defects, linesep: bytes) -> None:
        self.defects = defects
        self.linesep = linesep
        self.attachments: list[ParsedAttachment] = []
        self.parts = 0

    def visit(
        self,
        part: Message,
        depth: int,
        default_type: str,
        *,
        related: bool = False,
        alternative: bool = False,
    ) -> _Body:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.defects.add(f"more than {MAX_PARTS} MIME parts; the rest were skipped")
            return None, None
        if depth > MAX_DEPTH:
            self.defects.add(_DEEP)
            return None, None
        for defect in getattr(part, "defects", ()):
            self.defects.add(_describe(defect))
        try:
            return self._visit(part, depth, default_type, related, alternative)
        except Exception as exc:
            self.defects.add(f"unreadable MIME part ({type(exc).__name__}); skipped")
            return None, None

    def _visit(
        self, part: Message, depth: int, default_type: str, related: bool, alternative: bool
    ) -> _Body:
        info = _PartInfo.of(part, default_type, self.defects)
        payload = getattr(part, "_payload", None)
        if isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            structure = info.maintype
            if structure not in ("multipart", "message"):
                # The stdlib's own reading of the type decided the structure.
                try:
                    structure = part.get_content_maintype()
                except Exception:
                    structure = "multipart"
            if structure == "message":
                self._message(info, children)
                return None, None
            subtype = info.subtype if info.maintype == "multipart" else "mixed"
            return self._multipart(info, subtype, children, depth)
        if info.maintype == "multipart":
            self.defects.add("multipart part without a usable boundary; read as text")
            info.content_type, info.valid = "text/plain", True
        return self._leaf(part, info, related, alternative)

    def _multipart(
        self, info: _PartInfo, subtype: str, children: list[Message], depth: int
    ) -> _Body:
        child_default = "message/rfc822" if subtype == "digest" else "text/plain"
        if subtype == "alternative":
            # RFC 2046 5.1.4: in increasing order of preference; keep the last of each.
            plain: str | None = None
            html: str | None = None
            for child in children:
                p, h = self.visit(child, depth + 1, child_default, alternative=True)
                plain = p if p is not None else plain
                html = h if h is not None else html
            return plain, html
        if subtype == "related":
            # RFC 2387: the root is named by "start", else it is the first part.
            start = _content_id(info.params.get("start"))
            root = 0
            if start is not None:
                for index, child in enumerate(children):
                    if _content_id(_first_header(child, "content-id")) == start:
                        root = index
                        break
            pieces: list[_Body] = []
            for index, child in enumerate(children):
                pieces.append(self.visit(child, depth + 1, child_default, related=index != root))
            return _combine(pieces)
        # mixed, and all others (signed, report, unknown): bodies in order.
        return _combine([self.visit(child, depth + 1, child_default) for child in children])

    def _leaf(self, part: Message, info: _PartInfo, related: bool, alternative: bool) -> _Body:
        as_file = info.disposition not in ("", "inline") or info.filename is not None
        if not related and not as_file and info.content_type in ("text/plain", "text/html"):
            data = self._payload_bytes(part, info)
            charset = info.params.get("charset")
            if charset is None and info.content_type == "text/html":
                charset = _meta_charset(data)
            text = _decode_bytes(data, charset, self.defects, info.content_type + " body")
            if info.content_type == "text/plain":
                return text.replace("\r\n", "\n").replace("\r", "\n"), None
            return None, text
        text_rendering = info.maintype == "text" and info.subtype != "calendar"
        if alternative and not as_file and text_rendering:
            return None, None  # another rendering of the body (enriched, AMP, watch)
        self._attach(part, info, related)
        return None, None

    def _attach(self, part: Message, info: _PartInfo, related: bool) -> None:
        data = self._payload_bytes(part, info)
        content_type = info.content_type if info.valid else "application/octet-stream"
        inline = info.content_id is not None and info.disposition == "inline"
        if related and (info.maintype == "image" or info.content_id is not None):
            inline = inline or not (info.disposition == "attachment" and info.content_id is None)
        name = _safe_filename(info.filename) or _derived_filename(content_type, info.subtype)
        self.attachments.append(ParsedAttachment(name, content_type, data, info.content_id, inline))

    def _message(self, info: _PartInfo, inner: list[Message]) -> None:
        """A message/* part: one attachment holding the inner message's bytes."""
        data = b"".join(_flatten(m, self.linesep) for m in inner)
        encoded = info.encoding not in ("", "7bit", "8bit", "binary")
        if encoded:
            # RFC 2046 5.2.1 forbids encoding message/rfc822, but some mailers do;
            # the stdlib then parses the encoded text as a headerless message.
            self.defects.add(f"{info.content_type} part with {info.encoding} encoding")
            data = _decode_transfer(data, info.encoding, self.defects)
        name = _safe_filename(info.filename)
        if name is None and info.content_type in ("message/rfc822", "message/global"):
            if encoded or not inner:
                headers = _headers_of_bytes(data, self.defects)
            else:
                headers = _raw_headers(inner[0], {"subject"}, self.defects)
            subject = _subject(headers, self.defects)
            name = _safe_filename(subject[:200] + ".eml") if subject else "message.eml"
        name = name or _derived_filename(info.content_type, info.subtype)
        inline = info.content_id is not None and info.disposition == "inline"
        self.attachments.append(
            ParsedAttachment(name, info.content_type, data, info.content_id, inline)
        )

    def _payload_bytes(self, part: Message, info: _PartInfo) -> bytes:
        # The raw payload: the stdlib keeps 8-bit bytes as surrogate escapes, and
        # Message.get_payload() without decode=True decodes those lossily.
        payload = getattr(part, "_payload", None)
        if isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str):
            raw = payload.encode("utf-8", "surrogateescape")
        else:
            raw = b""
        return _decode_transfer(raw, info.encoding, self.defects)


def _combine(pieces: list[_Body]) -> _Body:
    """Bodies found one after another (multipart/mixed) shown one after another."""
    found = [(p, h) for p, h in pieces if p is not None or h is not None]
    if len(found) <= 1:
        return found[0] if found else (None, None)
    plain = None
    if any(p is not None for p, _ in found):
        texts = [p if p is not None else html_to_text(_sanitize(h, None)) for p, h in found]
        # each part starts on a line of its own
        plain = "".join(t if t.endswith("\n") else t + "\n" for t in texts[:-1] if t) + texts[-1]
    html = None
    if any(h is not None for _, h in found):
        html = "".join(
            h if h is not None else f"<pre>{html_lib.escape(p or '')}</pre>" for p, h in found
        )
    return plain, html


# -- one part's MIME headers -----------------------------------------------------


@dataclass(slots=True)
class _PartInfo:
    content_type: str  # lower "type/subtype"
    valid: bool  # a well-formed type was declared, or none (the default applies)
    params: dict[str, str]
    disposition: str  # lower: "", "inline", "attachment", ...
    filename: str | None  # decoded, not yet made safe
    content_id: str | None
    encoding: str  # lower Content-Transfer-Encoding token, "" when absent

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]

    @classmethod
    def of(cls, part: Message, default_type: str, defects: _Defects) -> _PartInfo:
        wanted = {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
        headers = _raw_headers(part, wanted, defects)
        content_type, valid = default_type, True
        params: dict[str, str] = {}
        if "content-type" in headers:
            value, params = _params(headers["content-type"][0], defects)
            value = re.sub(r"\([^()]*\)", "", value).strip().strip("\"'").lower()
            if _MIME_TYPE.fullmatch(value):
                content_type = value
            else:
                # RFC 2045 5.2: an invalid type is read as text/plain.
                content_type, valid = "text/plain", False
                defects.add(f"invalid Content-Type {_short(value)}")
        disposition = ""
        disp_params: dict[str, str] = {}
        if "content-disposition" in headers:
            disposition, disp_params = _params(headers["content-disposition"][0], defects)
            disposition = disposition.strip().strip("\"'").lower()
        filename = (
            disp_params.get("filename")
            or params.get("name")
            or params.get("filename")
            or disp_params.get("name")
        )
        encoding = ""
        if "content-transfer-encoding" in headers:
            tokens = re.split(
                r"[\s;(]+", headers["content-transfer-encoding"][0].strip(), maxsplit=1
            )
            encoding = tokens[0].strip("\"'").lower()
        content_id = _content_id(headers["content-id"][0]) if "content-id" in headers else None
        return cls(content_type, valid, params, disposition, filename, content_id, encoding)


_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def _first_header(part: Message, name: str) -> str | None:
    values = _raw_headers(part, {name}, _Defects()).get(name)
    return values[0] if values else None


def _content_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    match = re.search(r"<([^<>]*)>", value)
    if match:
        value = match.group(1)
    value = "".join(value.split())
    return value or None


def _params(value: str, defects: _Defects) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=1; b="x"`` -> ("type/subtype", {"a": "1", "b": "x"}),
    with RFC 2231 continuations and charsets decoded, and RFC 2047
    encoded-words in file names (not allowed there, but common)."""
    main, _, rest = value.partition(";")
    plain: dict[str, str] = {}
    extended: dict[str, list[tuple[int, bool, str]]] = {}
    for name, param in _param_pairs(rest):
        if "*" not in name:
            plain.setdefault(name, param)
            continue
        base, _, section = name.partition("*")
        if section == "":
            extended.setdefault(base, []).append((0, True, param))
        elif re.fullmatch(r"[0-9]{1,3}", section):
            extended.setdefault(base, []).append((int(section), False, param))
        elif re.fullmatch(r"[0-9]{1,3}\*", section):
            extended.setdefault(base, []).append((int(section[:-1]), True, param))
    params = {k: _decode_words(v, defects) if k in _NAMES else v for k, v in plain.items()}
    for base, sections in extended.items():
        sections.sort(key=lambda s: s[0])
        charset: str | None = None
        data = bytearray()
        encoded = False
        for index, (_, is_encoded, param) in enumerate(sections):
            if is_encoded:
                encoded = True
                if index == 0 and param.count("'") >= 2:
                    charset, _, param = param.split("'", 2)
                data += unquote_to_bytes(param)
            else:
                data += param.encode("utf-8")
        if encoded:
            text = _decode_bytes(bytes(data), charset or None, defects, f"parameter {base}")
        else:
            text = data.decode("utf-8")
        params[base] = _decode_words(text, defects) if base in _NAMES else text
    return main, params


_NAMES = frozenset({"name", "filename"})


def _param_pairs(rest: str) -> Iterator[tuple[str, str]]:
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        if i >= n:
            return
        semi = rest.find(";", i)
        stop = n if semi < 0 else semi
        eq = rest.find("=", i, stop)
        if eq < 0:
            i = stop + 1  # a parameter without a value
            continue
        name = rest[i:eq].strip().lower()
        j = eq + 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            k, chars = j + 1, []
            while k < n and rest[k] != '"':
                # Only \" and \\ are escapes: Windows paths in filenames keep
                # their backslashes, as the stdlib's unquote does.
                if rest[k] == "\\" and k + 1 < n and rest[k + 1] in '"\\':
                    chars.append(rest[k + 1])
                    k += 2
                else:
                    chars.append(rest[k])
                    k += 1
            param = "".join(chars)
            semi = rest.find(";", k)
            i = n if semi < 0 else semi + 1
        else:
            param = rest[j:stop].strip()
            i = stop + 1
        if name:
            yield name, param


# -- header fields ---------------------------------------------------------------

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


def _top_headers(msg: Message, defects: _Defects) -> dict[str, list[str]]:
    return _raw_headers(msg, _TOP_FIELDS, defects)


def _raw_headers(msg: Message, wanted: set[str], defects: _Defects) -> dict[str, list[str]]:
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


def _headers_of_bytes(data: bytes, defects: _Defects) -> dict[str, list[str]]:
    try:
        msg = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)
    except Exception:
        return {}
    return _raw_headers(msg, {"subject"}, defects)


_HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_text(value: object, name: str, defects: _Defects) -> str:
    """RFC 6532: raw 8-bit header bytes are UTF-8; when they are not, they are
    most likely windows-1252."""
    data = (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogateescape")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _cp1252(data)
        defects.add(f"{name} header has 8-bit bytes that are not UTF-8; read as windows-1252")
    text = re.sub(r"\r\n|\r|\n", "", text)  # RFC 5322 2.2.3 unfolding
    if "\x00" in text:
        defects.add(f"NUL characters removed from the {name} header")
    return _HEADER_CONTROLS.sub("", text)


def _bytes_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _cp1252(data)


def _one_line(text: str) -> str:
    text = re.sub(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]", "", text)  # controls other than whitespace
    return _valid_text(re.sub(r"[ \t\r\n\f\v]+", " ", text).strip())


def _subject(headers: dict[str, list[str]], defects: _Defects) -> str:
    values = headers.get("subject")
    return _one_line(_decode_words(values[0], defects)) if values else ""


def _date(headers: dict[str, list[str]], defects: _Defects) -> datetime | None:
    values = headers.get("date")
    if not values:
        return None
    try:
        value = parsedate_to_datetime(values[0].strip())
        if value.tzinfo is None:  # "-0000": UTC, source zone unknown (RFC 5322 3.3)
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except Exception:
        defects.add(f"unparsable Date {_short(values[0])}")
        return None


_MSG_ID = re.compile(r"<([^<>]*)>")


def _msg_ids(text: str) -> list[str]:
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
    return [_valid_text(i) for i in ids]


def _first_msg_id(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    ids = _msg_ids(values[0]) if values else []
    return ids[0] if ids else None


# -- RFC 2047 encoded-words ------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")


def _decode_words(text: str, defects: _Defects) -> str:
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
            data = _b64decode(payload.encode("ascii", "ignore"), defects, "encoded-word")
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
        p if isinstance(p, str) else _decode_bytes(bytes(p[1]), p[0], defects, "encoded-word")
        for p in parts
    )


# -- addresses -------------------------------------------------------------------


def _addresses(headers: dict[str, list[str]], name: str, defects: _Defects) -> list[Address]:
    values = headers.get(name)
    if not values:
        return []
    try:
        return _address_list(", ".join(values), name, defects)
    except Exception:
        defects.add(f"unparsable {name} header")
        return []


_Token = tuple[str, str, str]  # (kind, value, source text)


def _address_list(text: str, field: str, defects: _Defects) -> list[Address]:
    """RFC 5322 3.4 address-list, leniently: groups are flattened, garbage
    between commas is skipped, and a display name split by an unquoted comma
    ("Smith, John <j@x>") is joined back."""
    result: list[Address] = []
    carry = ""
    for chunk in _mailbox_chunks(_address_tokens(text)):
        if not any(kind != "ws" for kind, _, _ in chunk):
            continue
        addr, name, angle = _mailbox(chunk)
        email_address = _addr_spec(addr) if addr is not None else None
        if email_address is None:
            words = _phrase(chunk).strip()
            if addr is not None:
                defects.add(f"unparsable address in {field}: {_short(addr)}")
            elif words and "@" not in words:
                carry = f"{carry}, {words}" if carry else words
            continue
        if carry and angle:
            name = f"{carry}, {name}" if name else carry
        elif carry:
            defects.add(f"unparsable address in {field}: {_short(carry)}")
        carry = ""
        display = _one_line(_decode_words(name, defects))
        result.append(Address(_valid_text(email_address), display))
    if carry:
        defects.add(f"unparsable address in {field}: {_short(carry)}")
    return result


def _address_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            j = i + 1
            while j < n and text[j] in " \t":
                j += 1
            tokens.append(("ws", " ", text[i:j]))
        elif c == '"':
            j, chars = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    chars.append(text[j + 1])
                    j += 2
                else:
                    chars.append(text[j])
                    j += 1
            j = min(j + 1, n)
            tokens.append(("quoted", "".join(chars), text[i:j]))
        elif c == "(":
            depth, j, chars = 1, i + 1, []
            while j < n:
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    chars.append(text[j + 1])
                    j += 2
                    continue
                j += 1
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                chars.append(ch)
            tokens.append(("comment", "".join(chars), text[i:j]))
        elif c == "<":
            close = text.find(">", i + 1)
            j = n if close < 0 else close + 1
            tokens.append(("angle", text[i + 1 : n if close < 0 else close], text[i:j]))
        elif c in ",;:":
            j = i + 1
            tokens.append((c, c, c))
        elif c in ">)":
            j = i + 1  # a stray closer
        else:
            j = i + 1
            while j < n and text[j] not in ' \t"(<>),;:':
                j += 1
            tokens.append(("atom", text[i:j], text[i:j]))
        i = j
    return tokens


def _mailbox_chunks(tokens: list[_Token]) -> Iterator[list[_Token]]:
    chunk: list[_Token] = []
    for token in tokens:
        kind = token[0]
        if kind in (",", ";"):
            yield chunk
            chunk = []
        elif kind == ":":
            if not any(t[0] == "angle" for t in chunk):
                chunk = []  # a group's display name (RFC 5322 3.4): not an address
        else:
            chunk.append(token)
    yield chunk


def _mailbox(chunk: list[_Token]) -> tuple[str | None, str, bool]:
    """(addr-spec as written, display name source, whether name-addr form)."""
    angles = [i for i, t in enumerate(chunk) if t[0] == "angle"]
    if angles:
        at = next((i for i in angles if "@" in chunk[i][1]), angles[0])
        addr = chunk[at][1].strip()
        if addr.startswith("@") and ":" in addr:  # obsolete source route
            addr = addr.partition(":")[2]
        if '"' not in addr:
            addr = "".join(addr.split())
        name = _phrase(chunk[:at]).strip()
        if not name:
            name = next((t[1] for t in chunk[at:] if t[0] == "comment"), "")
        return addr, name, True
    words: list[str] = []
    current = ""
    for kind, _, source in chunk:
        if kind in ("atom", "quoted"):
            current += source
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    comment = next((t[1] for t in chunk if t[0] == "comment"), "")
    with_at = [w for w in words if "@" in w]
    if len(words) > 1 and len(with_at) == 1 and _addr_spec(with_at[0]) is not None:
        # "Name addr@host" without brackets
        return with_at[0], " ".join(w for w in words if w is not with_at[0]) or comment, False
    if not with_at:
        return None, "", False
    return "".join(words), comment, False


def _phrase(tokens: list[_Token]) -> str:
    return "".join(value for kind, value, _ in tokens if kind in ("atom", "quoted", "ws"))


def _addr_spec(addr: str) -> str | None:
    """``local@domain`` as written, the domain lower-cased; None if not one."""
    addr = addr.strip()
    if addr[:7].lower() == "mailto:":
        addr = addr[7:]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return None
    if domain.startswith("[") and domain.endswith("]"):
        if re.search(r"[\s\[\]\\]", domain[1:-1]):
            return None
    elif re.search(r'[\s<>()\[\],;:"\\@]', domain):
        return None
    if not local.startswith('"') and re.search(r"[\s<>(),;:\\]", local):
        return None
    if re.search(r"[\x00-\x1f\x7f]", addr):
        return None
    return f"{local}@{domain.lower()}"


# -- charsets --------------------------------------------------------------------

# Labels mail uses that Python lacks, or maps to a narrower table than the
# senders meant: these read the label as the Microsoft superset, as browsers do
# (WHATWG Encoding Standard).
_LABELS = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601-1989": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "windows-949": "cp949",
    "x-windows-949": "cp949",
    "x-gbk": "gb18030",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "ucs-2": "utf-16",
    "x-user-defined": "cp1252",
    "ansi_x3.4-1968": "ascii",
}
_SUPERSETS = {
    "euc_kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "shift_jis": "cp932",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
}
# Tried, in order, when the declared one fails on the bytes.
_RETRIES = {"iso2022_jp": ("iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_3")}
# Text codecs that are no charset a mail can declare (they unescape or refuse).
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "undefined", "idna", "punycode"}
_MULTIBYTE = ("utf", "cp93", "cp94", "cp95", "euc", "iso2022", "gb", "big5", "hz", "shift", "johab")


@functools.lru_cache(maxsize=256)
def _codec(label: str) -> str | None:
    """Python's codec for a charset label, or None if there is no usable one."""
    name = label.strip().strip("\"'").lower()
    if not name or len(name) > 40:
        return None
    name = _LABELS.get(name, name)
    try:
        info = codecs.lookup(name)
    except Exception:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return _SUPERSETS.get(info.name, info.name)


def _decode_bytes(data: bytes, label: str | None, defects: _Defects, where: str) -> str:
    """Text in the declared charset; else UTF-8; else the declared charset with
    replacement characters when few bytes are damaged; else windows-1252,
    which reads any bytes."""
    codec = _codec(label) if label else None
    if label and codec is None:
        defects.add(f"unknown charset {_short(label)} in {where}")
    if not data:
        return ""
    first = codec or "ascii"
    family = (first, *_RETRIES.get(first, ()))
    for name in (*family, "utf-8"):
        try:
            text = data.decode(name)
        except (UnicodeError, LookupError):
            continue
        if name not in family:
            defects.add(f"{where} is not valid {label or 'ASCII'}; read as {name}")
        return text.removeprefix("\ufeff")
    if codec is not None and codec.startswith(_MULTIBYTE):
        try:
            text = data.decode(codec, "replace")
        except (UnicodeError, LookupError):
            text = ""
        bad = text.count("\ufffd")
        good = sum(1 for ch in text if ch > "\x7f") - bad
        if text and bad * 10 <= good:
            defects.add(f"{where} has bytes that are not valid {label}; replaced")
            return text.removeprefix("\ufeff")
    defects.add(f"{where} is not valid {label or 'ASCII'}; read as windows-1252")
    return _cp1252(data)


# windows-1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined; Python's codec
# refuses them, browsers read them as the C1 controls of the same value.
_CP1252_TABLE = {i: bytes([i]).decode("cp1252", "ignore") or chr(i) for i in range(0x80, 0xA0)}


def _cp1252(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1").translate(_CP1252_TABLE)


_META_CHARSET = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]{1,40})", re.I
)


def _meta_charset(data: bytes) -> str | None:
    """The charset an HTML part names in a <meta> tag (HTML 13.2.3.2 looks at
    the first 1024 bytes)."""
    match = _META_CHARSET.search(data[:1024])
    return match.group(1).decode("ascii") if match else None


_SURROGATES = re.compile("[\ud800-\udfff]")


def _valid_text(text: str) -> str:
    """No lone surrogates (some codecs, like UTF-7, can produce them)."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


def _normalize_text(text: str, defects: _Defects) -> str:
    if "\x00" in text:
        defects.add("NUL characters removed from the body")
        text = text.replace("\x00", "")
    return _valid_text(text.replace("\r\n", "\n").replace("\r", "\n"))


# -- transfer encodings ----------------------------------------------------------


def _decode_transfer(raw: bytes, encoding: str, defects: _Defects) -> bytes:
    if encoding in ("", "7bit", "8bit", "binary"):
        return raw
    if encoding == "base64":
        return _b64decode(raw, defects, "base64 part")
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uudecode(raw, defects)
    defects.add(f"unknown Content-Transfer-Encoding {_short(encoding)}; kept as is")
    return raw


def _b64decode(raw: bytes, defects: _Defects, where: str) -> bytes:
    try:
        return binascii.a2b_base64(raw)
    except binascii.Error:
        pass
    # Truncated (missing padding, or one stray character): decode what is whole.
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
    extra = len(clean) % 4
    clean = clean[: len(clean) - 1] if extra == 1 else clean + b"=" * ((4 - extra) % 4)
    defects.add(f"truncated or damaged base64 in {where}")
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def _uudecode(raw: bytes, defects: _Defects) -> bytes:
    out = bytearray()
    started = False
    for line in raw.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`", b""):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Broken encoders pad lines short; decode what the length byte says.
            nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out += binascii.a2b_uu(line[:nbytes])
            except binascii.Error:
                defects.add("damaged uuencoded data")
    return bytes(out)


# -- HTML ------------------------------------------------------------------------

_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
# Elements that never nest (void) or whose end tag the parser implies.
_VOID_ELEMENTS = "area base br col embed hr img input link meta param source track wbr"
_IMPLIED_END = "p li dt dd td th tr tbody thead tfoot option optgroup colgroup caption rb rt rp"
_FLAT_ELEMENTS = frozenset(f"{_VOID_ELEMENTS} {_IMPLIED_END} html head body".split())


def _sanitize(html: str | None, defects: _Defects | None) -> str:
    """compose.sanitize_html, after dropping what browsers never show (<head>,
    whose <title> text the sanitizer would keep) and bounding the nesting."""
    if not html:
        return ""
    html = _valid_text(html.replace("\x00", ""))
    html = _drop_element(html, "head")
    html = _drop_element(html, "title")
    cut = _html_cut(html)
    if cut is not None:
        if defects is not None:
            defects.add("HTML body nested too deeply; cut short")
        html = html[:cut]
    try:
        return sanitize_html(html)
    except Exception as exc:
        if defects is not None:
            defects.add(f"HTML body could not be sanitized ({type(exc).__name__})")
        return html_lib.escape(html)


def _drop_element(html: str, tag: str) -> str:
    lower = html.lower()
    start = lower.find(f"<{tag}")
    if start < 0 or lower[start + len(tag) + 1 : start + len(tag) + 2].isalnum():
        return html
    end = lower.find(f"</{tag}", start)
    if end < 0:
        return html
    close = lower.find(">", end)
    return html[:start] + html[(len(html) if close < 0 else close + 1) :]


def _html_cut(html: str) -> int | None:
    depth = work = 0
    for match in _HTML_TAG.finditer(html):
        name = match.group(2).lower()
        if name in _FLAT_ELEMENTS:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
            continue
        depth += 1
        work += depth
        if depth > MAX_HTML_DEPTH or work > MAX_HTML_WORK:
            return match.start()
    return None


# -- filenames -------------------------------------------------------------------

_FILENAME_JUNK = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _safe_filename(name: str | None) -> str | None:
    """The last path component, without control or bidirectional-override
    characters (used to disguise "exe" as "pdf"), or None if nothing is left."""
    if not name:
        return None
    name = re.split(r"[/\\]", _FILENAME_JUNK.sub("", _valid_text(name)))[-1].strip()
    if name in ("", ".", ".."):
        return None
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 254 - len(ext)] + dot + ext if dot and 0 < len(ext) <= 16 else name[:255]
    return name


_EXTENSIONS = {
    "application/gzip": "gz",
    "application/ics": "ics",
    "application/json": "json",
    "application/msword": "doc",
    "application/pdf": "pdf",
    "application/pgp-encrypted": "asc",
    "application/pgp-keys": "asc",
    "application/pgp-signature": "asc",
    "application/pkcs7-mime": "p7m",
    "application/pkcs7-signature": "p7s",
    "application/rtf": "rtf",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/x-pkcs7-signature": "p7s",
    "application/xml": "xml",
    "application/zip": "zip",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "image/bmp": "bmp",
    "image/gif": "gif",
    "image/heic": "heic",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/png": "png",
    "image/svg+xml": "svg",
    "image/tiff": "tif",
    "image/webp": "webp",
    "message/delivery-status": "txt",
    "message/disposition-notification": "txt",
    "message/feedback-report": "txt",
    "message/global": "eml",
    "message/rfc822": "eml",
    "text/calendar": "ics",
    "text/css": "css",
    "text/csv": "csv",
    "text/html": "html",
    "text/rfc822-headers": "txt",
    "text/vcard": "vcf",
    "text/x-vcard": "vcf",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
_STEMS = {
    "text/calendar": "invite",
    "application/ics": "invite",
    "application/pgp-signature": "signature",
    "application/pkcs7-signature": "smime",
    "application/x-pkcs7-signature": "smime",
    "message/rfc822": "message",
    "message/global": "message",
}


def _derived_filename(content_type: str, subtype: str) -> str:
    maintype = content_type.partition("/")[0]
    ext = _EXTENSIONS.get(content_type) or ("txt" if maintype == "text" else "bin")
    if content_type in _STEMS:
        stem = _STEMS[content_type]
    elif maintype in ("image", "audio", "video"):
        stem = maintype
    elif maintype == "message":
        stem = subtype or "message"
    else:
        stem = "attachment"
    return f"{stem}.{ext}"


# -- serializing a parsed message back to bytes ----------------------------------


def _flatten(root: Message, linesep: bytes) -> bytes:
    """The bytes of a parsed (sub)message, as close to the source as the tree
    keeps. Iterative: the stdlib's generator recurses once per level."""
    out = bytearray()
    stack: list[Message | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        headers = list(item.raw_items())
        for name, value in headers:
            out += f"{name}: {value}".encode("utf-8", "surrogateescape") + linesep
        if headers:
            out += linesep
        payload = getattr(item, "_payload", None)
        if isinstance(payload, str):
            out += payload.encode("utf-8", "surrogateescape")
        elif isinstance(payload, bytes):
            out += payload
        elif isinstance(payload, list):
            subs = [p for p in payload if isinstance(p, Message)]
            try:
                boundary = (
                    item.get_boundary() if item.get_content_maintype() == "multipart" else None
                )
            except Exception:
                boundary = None
            if boundary is None:
                stack.extend(reversed(subs))
                continue
            delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
            sequence: list[Message | bytes] = []
            if item.preamble is not None:
                sequence.append(item.preamble.encode("utf-8", "surrogateescape") + linesep)
            for index, sub in enumerate(subs):
                sequence += [(linesep if index else b"") + delimiter + linesep, sub]
            sequence.append((linesep if subs else b"") + delimiter + b"--" + linesep)
            if item.epilogue is not None:
                sequence.append(item.epilogue.encode("utf-8", "surrogateescape"))
            stack.extend(reversed(sequence))
    return bytes(out)
