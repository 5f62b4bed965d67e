"""Characters that change how text reads without being seen: C0 and C1
controls, zero-width characters, bidirectional marks, overrides and isolates
(Unicode Standard Annex #9; "Trojan Source", CVE-2021-42574), line and
paragraph separators, the byte order mark, and lone surrogates (which no
encoding can carry).

Refused in addresses and display names (``addresses.py``), removed from
attachment file names (``mime/filenames.py``), kept out of the header fields
we write (``compose.py``). Ordinary whitespace and the other format
characters are the caller's business: a local part refuses far more
(``addresses.normalize_email``), a subject refuses less.
"""

from __future__ import annotations

import re
import unicodedata

HIDDEN = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0 and C1 controls, DEL
    "\u200b-\u200f"  # zero width space, non-joiner, joiner; LRM, RLM
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e"  # bidirectional embeddings and overrides
    "\u2060"  # word joiner
    "\u2066-\u2069"  # bidirectional isolates
    "\ufeff"  # zero width no-break space (byte order mark)
    "\ud800-\udfff"  # lone surrogates
    "]"
)


def describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character named for an error message."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"


def first_hidden(text: str) -> str | None:
    """The first hidden character of ``text``, described, or None."""
    found = HIDDEN.search(text)
    return describe(found.group()) if found else None
