"""The ASCII fast path of ``search.tokens.tokens`` finds exactly the words of
the general (Unicode) path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailfleet.search.tokens import MAX_TOKEN, _tokens_unicode, tokens

ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=300)


@given(ASCII)
def test_ascii_fast_path_matches_the_general_path(text: str) -> None:
    assert tokens(text) == _tokens_unicode(text)


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
