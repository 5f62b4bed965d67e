"""``search.tokens.tokens``: its ASCII fast path finds exactly the words of the
general (Unicode) path, and the general path, made of regular expressions for
speed, finds exactly what the plain character loop it replaced found (kept
here as the reference: it says the rules one character at a time)."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfleet.search.tokens import _WORD, MAX_TOKEN, _tokens_unicode, fold, tokens

ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=300)
# Every kind of character, and more often the ones the rules are about:
# Latin with diacritics, combining marks, kana and their voicing marks,
# Hangul (syllables and Jamo), ideographs, compatibility forms, separators.
INTERESTING = (
    "aZ9_ -.@éÅßẞﬁℌⅫ①\u0301\u0308\u0327\u302a\u3099\u309aかがカﾊﾟ회의를가中文字、。々\u200b"
)
UNICODE = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(INTERESTING)), max_size=200)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x1100 <= code <= 0x11FF
        or 0x2E80 <= code <= 0x9FFF
        or 0xA960 <= code <= 0xA97F
        or 0xAC00 <= code <= 0xD7FF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF66 <= code <= 0xFFDC
        or 0x20000 <= code <= 0x3FFFF
    )


def reference_fold(text: str) -> str:
    kept: list[str] = []
    base_is_cjk = False
    for char in unicodedata.normalize("NFKD", text.casefold()):
        if not unicodedata.combining(char):
            base_is_cjk = _is_cjk(char)
            kept.append(char)
        elif base_is_cjk:
            kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept)).casefold()


def reference_tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in _WORD.findall(reference_fold(text)):
        run: list[str] = []
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


@given(ASCII)
def test_ascii_fast_path_matches_the_general_path(text: str) -> None:
    assert tokens(text) == _tokens_unicode(text)


@settings(max_examples=1000)
@given(UNICODE)
def test_unicode_path_matches_the_character_loop(text: str) -> None:
    assert fold(text) == reference_fold(text)
    assert tokens(text) == reference_tokens(text)


def test_ascii_examples() -> None:
    assert tokens("From: Alice <alice@Example.COM>, re_1 x" + "y" * 100) == [
        "from",
        "alice",
        "alice",
        "example",
        "com",
        "re",
        "1",
        "x" + "y" * (MAX_TOKEN - 1),
    ]


def test_unicode_examples() -> None:
    assert tokens("Müller STRASSE Straße café") == ["muller", "strasse", "strasse", "cafe"]
    assert tokens("회의를 잡자") == ["회의", "의를", "잡자"]
    assert tokens("がか") == ["がか"]  # the voicing mark stays: が is not か
    assert tokens("ﬁle ℌ①") == ["file", "h1"]
    assert tokens("abc中文def") == ["abc", "中文", "def"]
    assert tokens("中。文") == ["中", "文"]
