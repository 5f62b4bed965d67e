"""Charsets: bytes a mail declares in some charset to text (RFC 2045 section
5.1 and RFC 2046 section 4.1.2 ``charset``; RFC 2231 section 4 and RFC 2047
name them in header fields and parameters too).

Labels are read the way browsers read them (WHATWG Encoding Standard): the
Microsoft superset of a legacy charset, Korean and Chinese labels mail uses
that Python lacks. Text whose declared charset is wrong or unknown is read as
UTF-8, then, with replacement characters, in the declared multi-byte charset,
and last as windows-1252, which reads any bytes; each guess is a defect.
"""

from __future__ import annotations

import codecs
import functools
import re

from mailfleet.proto.mime.defects import Defects, short, valid_text

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


def decode_bytes(data: bytes, label: str | None, defects: Defects, where: str) -> str:
    """Text in the declared charset; else UTF-8; else the declared charset with
    replacement characters when few bytes are damaged; else windows-1252,
    which reads any bytes."""
    codec = _codec(label) if label else None
    if label and codec is None:
        defects.add(f"unknown charset {short(label)} in {where}")
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
    return cp1252(data)


# windows-1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined; Python's codec
# refuses them, browsers read them as the C1 controls of the same value.
_CP1252_TABLE = {i: bytes([i]).decode("cp1252", "ignore") or chr(i) for i in range(0x80, 0xA0)}


def cp1252(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1").translate(_CP1252_TABLE)


_META_CHARSET = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]{1,40})", re.I
)


def meta_charset(data: bytes) -> str | None:
    """The charset an HTML part names in a <meta> tag (HTML 13.2.3.2 looks at
    the first 1024 bytes)."""
    match = _META_CHARSET.search(data[:1024])
    return match.group(1).decode("ascii") if match else None


def bytes_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return cp1252(data)


def normalize_text(text: str, defects: Defects) -> str:
    if "\x00" in text:
        defects.add("NUL characters removed from the body")
        text = text.replace("\x00", "")
    return valid_text(text.replace("\r\n", "\n").replace("\r", "\n"))
