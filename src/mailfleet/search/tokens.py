"""Words as search sees them, the same for the text indexed and the query.

- Case is folded with ``str.casefold`` (``Straße`` = ``strasse``), and
  diacritics removed (``Müller`` = ``muller``, ``café`` = ``cafe``): NFKD,
  drop combining marks (not the voicing marks of kana: が is not か), NFC
  again (which puts Hangul syllables back together).
- A word is a run of letters and digits; everything else separates words, so
  ``alice@example.com`` is ``alice example com`` and ``from:alice`` finds it.
- Chinese, Japanese and Korean are written without spaces (and Korean glues
  particles to nouns: 회의를 = 회의 + 를), so runs of those scripts are indexed
  as overlapping pairs of characters (bigrams): 회의를 → 회의 의를. A query
  word becomes the same pairs, searched as a phrase, so 회의 finds 회의를. A
  run of one such character is kept as it is.

Both the index and the brute-force check in the tests use ``tokens``: what
matches is defined here once.
"""

from __future__ import annotations

import functools
import re
import unicodedata

MAX_TOKEN = 64  # longer runs (base64, hashes) are cut: nobody types them whole
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script


# Chinese, Japanese and Korean letters (Hangul Jamo, CJK radicals to unified
# ideographs and kana, Hangul syllables, compatibility ideographs, halfwidth
# forms, CJK extensions B and later), as a regular-expression class.
_CJK = (
    "\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff"
    "\uff66-\uffdc\U00020000-\U0003ffff"
)
# A word's pieces: a run of CJK letters or a run of other letters and digits.
_PIECE = re.compile(f"((?:(?=[{_CJK}])[^\\W_])+)|((?:(?![{_CJK}])[^\\W_])+)")


_ANY_CJK = re.compile(f"[{_CJK}]")


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@functools.cache
def _marks() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Runs of combining marks (canonical combining class not 0), which NFKD
    splits off their letters: those of the Basic Multilingual Plane, and all
    of them. The first is a table look-up a character (~13 ns); a class that
    reaches past U+FFFF is a list of ranges tried in turn (~60 ns), so it is
    used only for text that has such characters. Built at the first text
    that is not ASCII (~50 ms: every code point is asked)."""
    marks = [c for c in range(0x110000) if unicodedata.combining(chr(c))]

    def runs_of(codes: list[int]) -> re.Pattern[str]:
        ranges: list[list[int]] = []
        for code in codes:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
        return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]+")

    return runs_of([c for c in marks if c <= 0xFFFF]), runs_of(marks)


def _unless_after_cjk(marks: re.Match[str]) -> str:
    # A run found scanning forward starts right after its base character.
    start = marks.start()
    return marks.group() if start and _ANY_CJK.match(marks.string, start - 1) else ""


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Diacritics go, but not after a CJK base: kana voicing marks change the
    # word (が is not か).
    basic, every = _marks()
    marks = every if _ASTRAL.search(decomposed) else basic
    if _ANY_CJK.search(decomposed) is None:
        stripped = marks.sub("", decomposed)
    else:
        stripped = marks.sub(_unless_after_cjk, decomposed)
    # Compatibility forms can decompose to capitals (U+210C is H): fold again.
    return unicodedata.normalize("NFC", stripped).casefold()


def tokens(text: str) -> list[str]:
    if text.isascii():
        # Nothing to fold but case and no CJK (worker-in indexes every mail).
        return [word[:MAX_TOKEN] for word in _WORD.findall(text.lower())]
    return _tokens_unicode(text)


def _tokens_unicode(text: str) -> list[str]:
    # Regular expressions over the whole text, not a loop over characters:
    # ~10x faster on a European-language body, most mail that is not ASCII.
    folded = fold(text)
    if _ANY_CJK.search(folded) is None:
        return [word[:MAX_TOKEN] for word in _WORD.findall(folded)]
    out: list[str] = []
    for cjk, plain in _PIECE.findall(folded):
        if plain:
            out.append(plain[:MAX_TOKEN])
        elif len(cjk) == 1:
            out.append(cjk)
        else:
            out.extend([cjk[i : i + 2] for i in range(len(cjk) - 1)])
    return out


def contains_phrase(haystack: list[str], needle: list[str]) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as consecutive tokens."""
    if not needle:
        return True
    first = needle[0]
    n = len(needle)
    return any(
        haystack[i] == first and haystack[i : i + n] == needle for i in range(len(haystack) - n + 1)
    )
