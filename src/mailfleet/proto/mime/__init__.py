"""Reading received mail: the raw bytes of any Internet message in, what a mail
reader shows out. Pure: bytes in, a ``ParsedMessage`` out, no I/O.

``parse_message`` never raises. Every mail must be delivered with what can be
read, so broken input (bad MIME, unknown or wrong charsets, 8-bit garbage,
truncation, absurd nesting) is read as far as it goes, and what was wrong is
listed in ``defects``. The stdlib ``email`` package splits the MIME structure;
header fields, parameters, transfer encodings and charsets are decoded here,
because the stdlib raises or loses text on too many real-world inputs.

One module per concern, each naming its RFCs:

- ``message``: the whole message, the public entry (``parse_message``);
- ``nesting``: the nesting bound, applied to the bytes before the stdlib parser;
- ``walk``: the MIME tree (RFC 2045, 2046, 2387): body and attachments;
- ``headers``: header fields (RFC 5322, 6532) and encoded-words (RFC 2047);
  addresses through the lenient lexer in ``proto/addresses.py``;
- ``params``: Content-Type/Disposition parameters (RFC 2045 5.1, RFC 2231);
- ``charsets``: charset labels to text, with the fallbacks real mail needs;
- ``transfer``: Content-Transfer-Encoding (RFC 2045 section 6);
- ``filenames``: attachment names made safe, or derived from the type;
- ``htmlbody``: the HTML body bounded and sanitized;
- ``defects``: what was wrong, collected as the other modules read.

Callers import from this package: ``from mailfleet.proto.mime import parse_message``.
"""

from __future__ import annotations

from mailfleet.proto.mime.defects import MAX_DEFECTS
from mailfleet.proto.mime.htmlbody import MAX_HTML_DEPTH, MAX_HTML_WORK
from mailfleet.proto.mime.message import ParsedMessage, parse_message
from mailfleet.proto.mime.walk import MAX_DEPTH, MAX_PARTS, ParsedAttachment

__all__ = [
    "MAX_DEFECTS",
    "MAX_DEPTH",
    "MAX_HTML_DEPTH",
    "MAX_HTML_WORK",
    "MAX_PARTS",
    "ParsedAttachment",
    "ParsedMessage",
    "parse_message",
]
