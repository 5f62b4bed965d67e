"""The search query parser, fuzzed (search/query.py): any text either parses
or raises ``QuerySyntaxError`` (the API's 400 with the reason), nothing
else; and parse → render → parse gives the same tree, both from text and
from trees drawn directly. The long form: bench/fuzz.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mailfleet.search.query import (
    MAX_QUERY_LENGTH,
    TEXT_FIELDS,
    And,
    Filter,
    Node,
    Not,
    Or,
    QuerySyntaxError,
    Text,
    parse,
    render,
)
from mailfleet.search.tokens import tokens

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PIECES = st.sampled_from(
    [
        "a",
        "budget",
        "OR",
        "or",
        "-",
        "(",
        ")",
        "-(",
        '"',
        ":",
        "from:",
        "to:",
        "subject:",
        "in:",
        "is:",
        "has:",
        "before:",
        "after:",
        "foo:",
        "inbox",
        "read",
        "unread",
        "starred",
        "attachment",
        "2025-01-31",
        "2025/1/1",
        "2025-13-01",
        "0000-01-01",
        "9999-12-31",
        "alice@example.com",
        "회의를",
        "会議",
        "Straße",
        "Müller",
        "ﬁ",
        "Ⅻ",
        "İ",
        "\u0301",
        "_",
        "\t",
        "\n",
        "\u3000",
    ]
)
query_text = st.one_of(
    st.lists(_PIECES | st.text(max_size=6), max_size=25).map(
        lambda parts: "".join(p + (" " if i % 3 else "") for i, p in enumerate(parts))
    ),
    st.text(max_size=80),
)


def parse_or_refuse(query: str) -> Node | None:
    """The tree, or None when the query is refused, as it may be, with a reason."""
    try:
        return parse(query)
    except QuerySyntaxError as exc:
        reason = str(exc)
    assert reason
    return None


@FUZZ
@given(query_text)
@example('in:"My Folder" -(a OR b) before:2025-1-3')
@example("회의를 -회의")
@example("ﬁ Ⅻ İ Straße")
@example("((a)) OR (b c) OR -(-d)")
@example("before:0000-01-01")
@example('subject:"" from:')
def test_parse_render_parse_round_trip(query: str) -> None:
    node = parse_or_refuse(query)
    if node is None:
        return
    rendered = render(node)
    # Dates written in full and CJK words as their pairs can make it longer.
    assume(len(rendered) <= MAX_QUERY_LENGTH)
    assert parse(rendered) == node, rendered
    assert render(parse(rendered)) == rendered


_WORDS = st.text(min_size=1, max_size=12).map(tokens).filter(bool).map(tuple)
_DAY_MS = st.dates(min_value=datetime(1, 1, 1).date()).map(
    lambda d: int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
)
_FOLDER = st.text(min_size=1, max_size=20).filter(lambda v: '"' not in v and v.strip() == v)
_LEAVES = st.one_of(
    st.builds(Text, _WORDS),
    st.builds(Text, _WORDS, st.sampled_from([("sender",), ("recipients",), ("subject",)])),
    st.builds(Filter, st.just("in"), _FOLDER),
    st.builds(Filter, st.just("is"), st.sampled_from(["read", "unread", "flagged"])),
    st.builds(Filter, st.just("has"), st.just("attachment")),
    st.builds(Filter, st.sampled_from(["before", "after"]), _DAY_MS),
)


def _trees(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    several = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, several), st.builds(Or, several))


trees = st.recursive(_LEAVES, _trees, max_leaves=12)


@FUZZ
@given(trees)
@example(Not(Not(Text(("a",)))))
@example(Or((Or((Text(("a",)), Text(("b",)))), And((Text(("c",)), Text(("d",)))))))
@example(Filter("in", "My (old) folder"))
def test_trees_render_to_queries_that_parse_back(node: Node) -> None:
    rendered = render(node)
    assume(len(rendered) <= MAX_QUERY_LENGTH and len(rendered) == len(rendered.strip()))
    try:
        parsed = parse(rendered)
    except QuerySyntaxError as exc:
        assume("more than" not in str(exc))  # over MAX_TERMS
        raise
    assert parsed == node, rendered


def test_render_refuses_trees_no_query_makes() -> None:
    with pytest.raises(ValueError, match="fields"):
        render(Text(("a",), ("body",)))
    assert render(Text(("a", "b"), TEXT_FIELDS)) == '"a b"'
