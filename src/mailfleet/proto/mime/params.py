"""Header field parameters: ``type/subtype; name=value; ...`` in
Content-Type and Content-Disposition (RFC 2045 section 5.1, RFC 2183), with
RFC 2231 continuations (``name*0=``, ``name*1=``), charsets and percent
escapes (``name*=utf-8''...``) decoded, and RFC 2047 encoded-words in file
names (not allowed there by RFC 2047 section 5, but common).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

from mailfleet.proto.mime.charsets import decode_bytes
from mailfleet.proto.mime.defects import Defects
from mailfleet.proto.mime.headers import decode_words


def split_params(value: str, defects: Defects) -> tuple[str, dict[str, str]]:
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
    params = {k: decode_words(v, defects) if k in _NAMES else v for k, v in plain.items()}
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
            text = decode_bytes(bytes(data), charset or None, defects, f"parameter {base}")
        else:
            text = data.decode("utf-8")
        params[base] = decode_words(text, defects) if base in _NAMES else text
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
