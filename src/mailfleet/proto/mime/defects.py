"""What was wrong with a message: short descriptions collected while reading it.

``parse_message`` never raises; everything it had to guess, skip or repair is
listed here instead, each description once, at most ``MAX_DEFECTS`` of them.
Also the text hygiene every module applies to what it hands out: no lone
surrogates (``valid_text``), long values shortened in descriptions (``short``).
"""

from __future__ import annotations

import re

MAX_DEFECTS = 50  # defects listed; the rest are counted


class Defects:
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
        listed = [valid_text(d) for d in self._seen]
        if self._more:
            listed.append(f"{len(self._more)} more defects not listed")
        return tuple(listed)


def short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def describe(defect: object) -> str:
    """``StartBoundaryNotFoundDefect`` -> "start boundary not found"."""
    name = type(defect).__name__.removesuffix("Defect")
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


_SURROGATES = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """No lone surrogates (some codecs, like UTF-7, can produce them)."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)
