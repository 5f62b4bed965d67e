"""The nesting bound, applied to the raw bytes before the stdlib parser sees
them.

The stdlib parser recurses once per nested multipart or message/* part (and
raises RecursionError near 1000 levels) and checks every line against every
enclosing boundary, so deep nesting is both a crash and quadratic. This
scanner follows the same structure line by line (RFC 2046 5.1.1 boundaries,
RFC 2046 5.1.5 digests whose parts default to message/rfc822), without
recursion, and turns the Content-Type of any part nested deeper than the
limit into application/octet-stream: that part's subtree becomes one opaque
leaf, and the parts after it are still read.
"""

from __future__ import annotations

import re

from mailfleet.proto.mime.charsets import bytes_text
from mailfleet.proto.mime.defects import Defects
from mailfleet.proto.mime.params import split_params
from mailfleet.proto.mime.walk import DEEP, MAX_DEPTH

_NEST_LIMIT = MAX_DEPTH + 2  # one level past what the walker reads, so it notes the cut
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")  # the stdlib's headerRE


def limit_nesting(raw: bytes, defects: Defects) -> bytes:
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
    defects.add(DEEP)
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
        _, params = split_params(bytes_text(re.sub(rb"\r\n|\r|\n", b"", ctype)), Defects())
        if params.get("boundary"):
            boundary = params["boundary"].rstrip().encode("utf-8", "surrogateescape")
    return maintype, subtype, boundary
