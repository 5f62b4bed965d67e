"""The search language of ``GET /v1/search?q=`` (Gmail's, in its common part).

    budget 2025                  both words, anywhere (subject, sender,
                                 recipients, body, attachment names)
    "quarterly budget"           a phrase
    from:alice  to:bob@x.org     sender / recipients (To, Cc, and Bcc on one's own copy)
    subject:(no parentheses)     subject:"two words" for a phrase
    in:inbox  in:"My Folder"     a folder, by role or by name
    is:read is:unread is:flagged (is:starred)   has:attachment
    before:2025-01-31 after:2025/01/01          received, UTC dates
    a OR b   -word   -from:x   ( ... )          either, not, grouping

Words side by side must all match (AND); OR binds tighter than AND, as in
Gmail (``a b OR c`` is ``a (b OR c)``). A word of an unknown operator
(``foo:bar``) is plain text. Operator values that cannot be meant
(``is:banana``, ``before:2025-13-01``) and broken syntax (an unclosed quote
or parenthesis) raise ``QuerySyntaxError`` with a message for the user.

``parse`` returns a tree of ``Text``, ``Filter``, ``Not``, ``And`` and ``Or``;
``matches`` evaluates it on one message in Python: the definition the index
must agree with (the property tests compare the two). ``render`` writes a
tree back as a query that parses to the same tree (tests/search/test_query_fuzz.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Union

from mailfleet.search.tokens import contains_phrase, tokens

MAX_QUERY_LENGTH = 1000
MAX_TERMS = 50
TEXT_FIELDS = ("subject", "sender", "recipients", "body", "attachments")
FIELD_OPERATORS = {"from": "sender", "to": "recipients", "subject": "subject"}
IS_VALUES = {"read", "unread", "flagged", "starred"}


class QuerySyntaxError(ValueError):
    """The query cannot be understood; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class Text:
    """Consecutive ``words`` (tokens) in one of ``fields``."""

    words: tuple[str, ...]
    fields: tuple[str, ...] = TEXT_FIELDS


@dataclass(frozen=True, slots=True)
class Filter:
    """``kind`` is "in" (value: folder name or role as typed), "is" (read,
    unread, flagged), "has" (attachment), "before" or "after" (value: ms since
    the epoch, UTC midnight of the date)."""

    kind: str
    value: str | int


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Union[Text, Filter, Not, And, Or]  # noqa: UP007 - a runtime alias

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<neglparen>-\() | (?P<lparen>\() | (?P<rparen>\)) |
      (?P<minus>-(?=[^\s)]))? (?:
        (?P<op>[A-Za-z]+):(?:"(?P<opquoted>[^"]*)"|(?P<opvalue>[^\s()"]*)) |
        "(?P<quoted>[^"]*)" |
        (?P<word>[^\s()"]+)
      ) |
      (?P<badquote>")
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Lexeme:
    kind: str  # "(", ")", "OR", "term"
    node: Node | None = None
    negated: bool = False


def parse(query: str) -> Node:
    if len(query) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    lexemes = _lex(query)
    if sum(1 for lexeme in lexemes if lexeme.kind == "term") > MAX_TERMS:
        raise QuerySyntaxError(f"more than {MAX_TERMS} search terms")
    parser = _Parser(lexemes)
    node = parser.expression()
    if parser.position < len(lexemes):
        raise QuerySyntaxError("unbalanced parentheses: a ')' closes nothing")
    if node is None:
        raise QuerySyntaxError("the query has nothing to search for")
    return node


def _lex(query: str) -> list[_Lexeme]:
    out: list[_Lexeme] = []
    position = 0
    query = query.strip()
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        if match["badquote"]:
            raise QuerySyntaxError('a quote (") is not closed')
        if match["neglparen"]:
            out.append(_Lexeme("(", negated=True))
        elif match["lparen"]:
            out.append(_Lexeme("("))
        elif match["rparen"]:
            out.append(_Lexeme(")"))
        elif match["word"] == "OR" and not match["minus"]:
            out.append(_Lexeme("OR"))
        else:
            node = _term(match)
            if node is not None:
                out.append(_Lexeme("term", node, bool(match["minus"])))
    return out


def _term(match: re.Match[str]) -> Node | None:
    operator = match["op"]
    if operator is not None:
        value = match["opquoted"] if match["opquoted"] is not None else match["opvalue"]
        name = operator.lower()
        if name in FIELD_OPERATORS:
            words = tuple(tokens(value))
            if not words:
                raise QuerySyntaxError(f"{operator}: needs a word after it")
            return Text(words, (FIELD_OPERATORS[name],))
        if name in ("in", "is", "has", "before", "after"):
            return _filter(name, value)
        text = f"{operator}:{value}"  # not an operator of ours: plain words
    else:
        text = match["quoted"] if match["quoted"] is not None else match["word"]
    words = tuple(tokens(text))
    return Text(words) if words else None


def _filter(name: str, value: str) -> Filter:
    if not value:
        raise QuerySyntaxError(f"{name}: needs a value after it")
    if name == "in":
        return Filter("in", value)
    if name == "is":
        if value.lower() not in IS_VALUES:
            raise QuerySyntaxError(f"is:{value} is not known; use is:read, is:unread or is:flagged")
        return Filter("is", "flagged" if value.lower() == "starred" else value.lower())
    if name == "has":
        if value.lower() not in ("attachment", "attachments"):
            raise QuerySyntaxError(f"has:{value} is not known; use has:attachment")
        return Filter("has", "attachment")
    return Filter(name, _day_start_ms(name, value))


def _day_start_ms(name: str, value: str) -> int:
    match = re.fullmatch(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", value)
    try:
        if match is None:
            raise ValueError
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise QuerySyntaxError(f"{name}:{value} is not a date like 2025-01-31") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


class _Parser:
    """expression := conjunct+ ; conjunct := unit ("OR" unit)* ;
    unit := "-"? (term | "(" expression ")")."""

    def __init__(self, lexemes: list[_Lexeme]) -> None:
        self.lexemes = lexemes
        self.position = 0

    def _peek(self) -> _Lexeme | None:
        return self.lexemes[self.position] if self.position < len(self.lexemes) else None

    def expression(self) -> Node | None:
        nodes: list[Node] = []
        while (lexeme := self._peek()) is not None and lexeme.kind != ")":
            node = self._conjunct()
            if node is not None:
                nodes.append(node)
        if not nodes:
            return None
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def _conjunct(self) -> Node | None:
        first = self._unit()
        alternatives = [first] if first is not None else []
        while (lexeme := self._peek()) is not None and lexeme.kind == "OR":
            self.position += 1
            after = self._peek()
            if after is None or after.kind in (")", "OR"):
                raise QuerySyntaxError("OR needs something to search for on both sides")
            node = self._unit()
            if node is not None:
                alternatives.append(node)
        if not alternatives:
            return None
        return alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))

    def _unit(self) -> Node | None:
        lexeme = self._peek()
        assert lexeme is not None
        self.position += 1
        if lexeme.kind == "OR":
            raise QuerySyntaxError("OR needs something to search for on both sides")
        if lexeme.kind == "(":
            inner = self.expression()
            closing = self._peek()
            if closing is None or closing.kind != ")":
                raise QuerySyntaxError("unbalanced parentheses: a '(' is not closed")
            self.position += 1
            if inner is not None and lexeme.negated:
                return Not(inner)
            return inner
        assert lexeme.node is not None
        return Not(lexeme.node) if lexeme.negated else lexeme.node


# -- a tree back to a query ----------------------------------------------------------

_OPERATOR_OF_FIELD = {field: operator for operator, field in FIELD_OPERATORS.items()}
_NEEDS_QUOTES = re.compile(r'[\s()"]')


def render(node: Node) -> str:
    """A query that ``parse`` reads as ``node``, for any tree ``parse`` made
    (words are tokens already; grouping is kept with parentheses)."""
    if isinstance(node, Text):
        words = " ".join(node.words)
        value = words if len(node.words) == 1 else f'"{words}"'
        if node.fields == TEXT_FIELDS:
            return value
        if len(node.fields) != 1 or node.fields[0] not in _OPERATOR_OF_FIELD:
            raise ValueError(f"no query searches exactly the fields {node.fields}")
        return f"{_OPERATOR_OF_FIELD[node.fields[0]]}:{value}"
    if isinstance(node, Filter):
        if node.kind in ("before", "after"):
            day = datetime.fromtimestamp(int(node.value) / 1000, UTC).date()
            return f"{node.kind}:{day.year:04d}-{day.month:02d}-{day.day:02d}"
        value = str(node.value)
        if _NEEDS_QUOTES.search(value):
            if '"' in value:
                raise ValueError(f"{node.kind}:{value!r} cannot be written in a query")
            value = f'"{value}"'
        return f"{node.kind}:{value}"
    if isinstance(node, Not):
        inner = node.node
        if isinstance(inner, Text | Filter):
            return "-" + render(inner)
        return f"-({render(inner)})"
    if isinstance(node, And):
        return " ".join(f"({render(n)})" if isinstance(n, And) else render(n) for n in node.nodes)
    grouped = (f"({render(n)})" if isinstance(n, And | Or) else render(n) for n in node.nodes)
    return " OR ".join(grouped)


# -- the definition: one message against a query ----------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a query looks at in one message."""

    fields: dict[str, list[str]]  # field name → its tokens
    folder_id: int
    is_read: bool
    is_flagged: bool
    has_attachments: bool
    received_at: int


def matches(node: Node, message: Candidate, folder_ids: Callable[[str], frozenset[int]]) -> bool:
    """Whether ``message`` answers ``node``; ``folder_ids`` resolves an in: value."""
    if isinstance(node, Text):
        needle = list(node.words)
        return any(contains_phrase(message.fields[f], needle) for f in node.fields)
    if isinstance(node, Not):
        return not matches(node.node, message, folder_ids)
    if isinstance(node, And):
        return all(matches(n, message, folder_ids) for n in node.nodes)
    if isinstance(node, Or):
        return any(matches(n, message, folder_ids) for n in node.nodes)
    if node.kind == "in":
        return message.folder_id in folder_ids(str(node.value))
    if node.kind == "is":
        return {
            "read": message.is_read,
            "unread": not message.is_read,
            "flagged": message.is_flagged,
        }[str(node.value)]
    if node.kind == "has":
        return message.has_attachments
    if node.kind == "before":
        return message.received_at < int(node.value)
    return message.received_at >= int(node.value)  # after: from that day on
