"""Reads at the driver's speed: SQLAlchemy Core writes the SQL once, the
driver runs it (decision 0013).

Building a ``select()``, computing its cache key and going through an async
engine cost more than the query itself on the read path (1.6 ms for a point
read through SQLAlchemy's asyncio engine over aiosqlite, against 13 µs in
``sqlite3``). A ``Query`` is a statement built once, at import, with named
bind parameters; it is compiled once per dialect to the SQL string and the
order of its parameters, then handed to the driver with the values. Statements
stay portable (the same ``Query`` compiles for SQLite and PostgreSQL); rows are
read by column name (``row["subject"]``: ``sqlite3.Row`` and asyncpg's
``Record`` both allow it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler


class Query:
    """A statement with named ``bindparam``s, compiled once per dialect."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: sa.ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """(SQL, parameter names in positional order, values of the literals
        the statement carries itself)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            order = tuple(compiled.positiontup or ())
            found = (compiled.string, order, dict(compiled.params))
            self._compiled[dialect.name] = found
        return found

    def bind(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql, order, literals = self.compiled(dialect)
        return sql, [params[n] if n in params else literals[n] for n in order]


def one_off(statement: sa.ClauseElement, dialect: Dialect) -> tuple[str, list[Any]]:
    """SQL and positional values of a statement built for one call (a search
    query's shape depends on the query): compiled every time."""
    # IN lists are expanded into the SQL ("postcompile"): one value each.
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    params = compiled.params
    return compiled.string, [params[n] for n in compiled.positiontup or ()]


class ReadSession(Protocol):
    """One read transaction: every query sees the same snapshot."""

    async def all(self, query: Query, **params: Any) -> Sequence[Any]: ...
    async def first(self, query: Query, **params: Any) -> Any | None: ...


class ReadSessions(Protocol):
    """Where a store's reads come from (SQLite: ``storage/embedded/sqlite_reads.py``)."""

    def read(self) -> AbstractAsyncContextManager[ReadSession]: ...
