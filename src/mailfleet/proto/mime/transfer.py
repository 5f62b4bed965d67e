"""Content-Transfer-Encoding undone (RFC 2045 section 6): base64 (6.8, also
the "B" encoding of RFC 2047 encoded-words), quoted-printable (6.7), and the
uuencode that old mailers still send. Damaged base64 is decoded as far as it
is whole; an unknown encoding leaves the bytes as they are. Never raises.
"""

from __future__ import annotations

import binascii
import re

from mailfleet.proto.mime.defects import Defects, short


def decode_transfer(raw: bytes, encoding: str, defects: Defects) -> bytes:
    if encoding in ("", "7bit", "8bit", "binary"):
        return raw
    if encoding == "base64":
        return b64decode(raw, defects, "base64 part")
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uudecode(raw, defects)
    defects.add(f"unknown Content-Transfer-Encoding {short(encoding)}; kept as is")
    return raw


def b64decode(raw: bytes, defects: Defects, where: str) -> bytes:
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


def _uudecode(raw: bytes, defects: Defects) -> bytes:
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
