"""The MIME walk (RFC 2045 and RFC 2046): one visit of the tree the stdlib
splits, finding the body a reader is shown and collecting the attachments.

- multipart/alternative: the last plain and the last HTML rendering win
  (RFC 2046 5.1.4); other renderings (enriched, AMP) are skipped;
- multipart/related: the root named by ``start``, else the first part
  (RFC 2387); the other parts are inline resources;
- multipart/mixed and every other multipart: bodies shown in order;
- message/*: one attachment holding the inner message (RFC 2046 5.2);
- a part's headers (Content-Type, Content-Disposition, Content-Transfer-Encoding,
  Content-ID) read leniently: an invalid type is text/plain (RFC 2045 5.2).

At most ``MAX_DEPTH`` levels and ``MAX_PARTS`` parts are read.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from email.message import Message

from mailfleet.proto.compose import html_to_text
from mailfleet.proto.mime.charsets import decode_bytes, meta_charset
from mailfleet.proto.mime.defects import Defects, describe, short
from mailfleet.proto.mime.filenames import derived_filename, safe_filename
from mailfleet.proto.mime.headers import (
    first_header,
    headers_of_bytes,
    parse_content_id,
    raw_headers,
    read_subject,
)
from mailfleet.proto.mime.htmlbody import sanitize_body
from mailfleet.proto.mime.params import split_params
from mailfleet.proto.mime.transfer import decode_transfer

MAX_DEPTH = 100  # multipart levels below the message that are read
MAX_PARTS = 1000  # MIME parts read in one message

DEEP = f"MIME nesting deeper than {MAX_DEPTH} levels; deeper parts were skipped"


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    filename: str  # decoded, directory-free, never empty
    content_type: str  # lower-case "type/subtype"
    data: bytes  # transfer encoding undone; a message/rfc822 part's inner message
    content_id: str | None  # without angle brackets
    inline: bool  # shown inside the body (cid: reference) rather than listed


# -- the MIME tree ---------------------------------------------------------------

Body = tuple[str | None, str | None]  # (text/plain, text/html source) found in a subtree


class Walker:
    """Visits the MIME tree once: finds the body, collects the attachments."""

    def __init__(self, defects: Defects, linesep: bytes) -> None:
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
    ) -> Body:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.defects.add(f"more than {MAX_PARTS} MIME parts; the rest were skipped")
            return None, None
        if depth > MAX_DEPTH:
            self.defects.add(DEEP)
            return None, None
        for defect in getattr(part, "defects", ()):
            self.defects.add(describe(defect))
        try:
            return self._visit(part, depth, default_type, related, alternative)
        except Exception as exc:
            self.defects.add(f"unreadable MIME part ({type(exc).__name__}); skipped")
            return None, None

    def _visit(
        self, part: Message, depth: int, default_type: str, related: bool, alternative: bool
    ) -> Body:
        info = PartInfo.of(part, default_type, self.defects)
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

    def _multipart(self, info: PartInfo, subtype: str, children: list[Message], depth: int) -> Body:
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
            start = parse_content_id(info.params.get("start"))
            root = 0
            if start is not None:
                for index, child in enumerate(children):
                    if parse_content_id(first_header(child, "content-id")) == start:
                        root = index
                        break
            pieces: list[Body] = []
            for index, child in enumerate(children):
                pieces.append(self.visit(child, depth + 1, child_default, related=index != root))
            return combine(pieces)
        # mixed, and all others (signed, report, unknown): bodies in order.
        return combine([self.visit(child, depth + 1, child_default) for child in children])

    def _leaf(self, part: Message, info: PartInfo, related: bool, alternative: bool) -> Body:
        as_file = info.disposition not in ("", "inline") or info.filename is not None
        if not related and not as_file and info.content_type in ("text/plain", "text/html"):
            data = self._payload_bytes(part, info)
            charset = info.params.get("charset")
            if charset is None and info.content_type == "text/html":
                charset = meta_charset(data)
            text = decode_bytes(data, charset, self.defects, info.content_type + " body")
            if info.content_type == "text/plain":
                return text.replace("\r\n", "\n").replace("\r", "\n"), None
            return None, text
        text_rendering = info.maintype == "text" and info.subtype != "calendar"
        if alternative and not as_file and text_rendering:
            return None, None  # another rendering of the body (enriched, AMP, watch)
        self._attach(part, info, related)
        return None, None

    def _attach(self, part: Message, info: PartInfo, related: bool) -> None:
        data = self._payload_bytes(part, info)
        content_type = info.content_type if info.valid else "application/octet-stream"
        inline = info.content_id is not None and info.disposition == "inline"
        if related and (info.maintype == "image" or info.content_id is not None):
            inline = inline or not (info.disposition == "attachment" and info.content_id is None)
        name = safe_filename(info.filename) or derived_filename(content_type, info.subtype)
        self.attachments.append(ParsedAttachment(name, content_type, data, info.content_id, inline))

    def _message(self, info: PartInfo, inner: list[Message]) -> None:
        """A message/* part: one attachment holding the inner message's bytes."""
        data = b"".join(flatten(m, self.linesep) for m in inner)
        encoded = info.encoding not in ("", "7bit", "8bit", "binary")
        if encoded:
            # RFC 2046 5.2.1 forbids encoding message/rfc822, but some mailers do;
            # the stdlib then parses the encoded text as a headerless message.
            self.defects.add(f"{info.content_type} part with {info.encoding} encoding")
            data = decode_transfer(data, info.encoding, self.defects)
        name = safe_filename(info.filename)
        if name is None and info.content_type in ("message/rfc822", "message/global"):
            if encoded or not inner:
                headers = headers_of_bytes(data, self.defects)
            else:
                headers = raw_headers(inner[0], {"subject"}, self.defects)
            subject = read_subject(headers, self.defects)
            name = safe_filename(subject[:200] + ".eml") if subject else "message.eml"
        name = name or derived_filename(info.content_type, info.subtype)
        inline = info.content_id is not None and info.disposition == "inline"
        self.attachments.append(
            ParsedAttachment(name, info.content_type, data, info.content_id, inline)
        )

    def _payload_bytes(self, part: Message, info: PartInfo) -> bytes:
        # The raw payload: the stdlib keeps 8-bit bytes as surrogate escapes, and
        # Message.get_payload() without decode=True decodes those lossily.
        payload = getattr(part, "_payload", None)
        if isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str):
            raw = payload.encode("utf-8", "surrogateescape")
        else:
            raw = b""
        return decode_transfer(raw, info.encoding, self.defects)


def combine(pieces: list[Body]) -> Body:
    """Bodies found one after another (multipart/mixed) shown one after another."""
    found = [(p, h) for p, h in pieces if p is not None or h is not None]
    if len(found) <= 1:
        return found[0] if found else (None, None)
    plain = None
    if any(p is not None for p, _ in found):
        texts = [p if p is not None else html_to_text(sanitize_body(h, None)) for p, h in found]
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
class PartInfo:
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
    def of(cls, part: Message, default_type: str, defects: Defects) -> PartInfo:
        wanted = {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
        headers = raw_headers(part, wanted, defects)
        content_type, valid = default_type, True
        params: dict[str, str] = {}
        if "content-type" in headers:
            value, params = split_params(headers["content-type"][0], defects)
            value = re.sub(r"\([^()]*\)", "", value).strip().strip("\"'").lower()
            if _MIME_TYPE.fullmatch(value):
                content_type = value
            else:
                # RFC 2045 5.2: an invalid type is read as text/plain.
                content_type, valid = "text/plain", False
                defects.add(f"invalid Content-Type {short(value)}")
        disposition = ""
        disp_params: dict[str, str] = {}
        if "content-disposition" in headers:
            disposition, disp_params = split_params(headers["content-disposition"][0], defects)
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
        content_id = parse_content_id(headers["content-id"][0]) if "content-id" in headers else None
        return cls(content_type, valid, params, disposition, filename, content_id, encoding)


_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


# -- serializing a parsed message back to bytes ----------------------------------


def flatten(root: Message, linesep: bytes) -> bytes:
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
