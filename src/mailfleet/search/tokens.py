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

import re
import unicodedata

MAX_TOKEN = 64  # longer runs (base64, hashes) are cut: nobody types them whole
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x1100 <= code <= 0x11FF  # Hangul Jamo
        or 0x2E80 <= code <= 0x9FFF  # CJK radicals ... unified ideographs, kana
        or 0xA960 <= code <= 0xA97F  # Hangul Jamo Extended-A
        or 0xAC00 <= code <= 0xD7FF  # Hangul syllables, Jamo Extended-B
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF66 <= code <= 0xFFDC  # halfwidth katakana and Hangul
        or 0x20000 <= code <= 0x3FFFF  # CJK extensions B and later
    )


def fold(text: str) -> str:
    kept: list[str] = []
    base_is_cjk = False
    for char in unicodedata.normalize("NFKD", text.casefold()):
        if not unicodedata.combining(char):
            base_is_cjk = _is_cjk(char)
            kept.append(char)
        elif base_is_cjk:  # kana voicing marks change the word: が is not か
            kept.append(char)
    stripped = "".join(kept)
    # Compatibility forms can decompose to capitals (U+210C is H): fold again.
    return unicodedata.normalize("NFC", stripped).casefold()


def tokens(text: str) -> list[str]:
    if text.isascii():
        # Nothing to fold but case and no CJK: the same words at C speed
        # (worker-in indexes every mail; the loop below costs ~0.5 us a
        # character, 50 ms for a 100 KB body).
        return [word[:MAX_TOKEN] for word in _WORD.findall(text.lower())]
    return _tokens_unicode(text)


def _tokens_unicode(text: str) -> list[str]:
    out: list[str] = []
    for word in _WORD.findall(fold(text)):
        run: list[str] = []  # a run of CJK characters inside the word
        plain: list[str] = []
        for char in word:
            if _is_cjk(char):
                if plain:
                    out.append("".join(plain)[:MAX_TOKEN])
                    plain = []
                run.append(char)
            else:
                if run:
                    out.extend(_bigrams(run))
                    run = []
                plain.append(char)
        if plain:
            out.append("".join(plain)[:MAX_TOKEN])
        if run:
            out.extend(_bigrams(run))
    return out


def _bigrams(run: list[str]) -> list[str]:
    if len(run) == 1:
        return run
    return [run[i] + run[i + 1] for i in range(len(run) - 1)]


def contains_phrase(haystack: list[str], needle: list[str]) -> bool:
    """Whether ``needle`` occurs in ``haystack`` as consecutive tokens."""
    if not needle:
        return True
    first = needle[0]
    n = len(needle)
    return any(
        haystack[i] == first and haystack[i : i + n] == needle for i in range(len(haystack) - n + 1)
    )
