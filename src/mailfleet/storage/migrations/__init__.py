"""Alembic migrations of the SQL metadata store (SQLite and PostgreSQL alike),
and the rule that decides whether a process may start on a database.

A fleet migrates once, on purpose: ``mailfleet db upgrade`` brings every
metadata database to the newest revision, and roles started with
``storage.migrate_on_start = false`` only check (``ensure_schema``): they
refuse a database older than this code, which names the command to run.
Every process refuses a database newer than this code (code downgraded under
a migrated schema). One process on the embedded default migrates by itself
(``migrate_on_start`` defaults to true).

New revision: ``scripts/new-migration "what changes"``. Revisions import no
live mailfleet code; this runner imports only the storage error type.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from mailfleet.storage.errors import SchemaOutOfDate

HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where one database's schema stands against this code."""

    database: str  # its URL, without a password
    current: str | None  # its revision; None: no schema yet
    head: str  # the newest revision this code knows
    known: bool  # ``current`` is one of this code's revisions (or None)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def upgrade_to_head(connection: Connection) -> None:
    """Brings the database on ``connection`` to the newest schema."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def schema_state(connection: Connection) -> SchemaState:
    script = ScriptDirectory(str(HERE))
    head = script.get_current_head()
    assert head is not None, "no revisions"
    current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or current in {s.revision for s in script.walk_revisions()}
    return SchemaState(database_name(connection.engine.url), current, head, known)


def ensure_schema(connection: Connection, *, migrate: bool) -> SchemaState:
    """Lets a process start on the database on ``connection`` (sync; from async
    code through ``conn.run_sync``): upgrades it to head when ``migrate``,
    else raises ``SchemaOutOfDate`` unless it is at head already. A revision
    this code does not know is refused either way. Answers the state found."""
    state = schema_state(connection)
    if not state.known:
        raise SchemaOutOfDate(state.database, state.current, state.head, newer=True)
    if state.up_to_date:
        return state
    if not migrate:
        raise SchemaOutOfDate(state.database, state.current, state.head)
    upgrade_to_head(connection)
    return state


# -- by URL, for ``mailfleet db`` --------------------------------------------------


def database_name(url: sa.URL | str) -> str:
    """The URL an operator wrote: no driver suffix, no password."""
    url = sa.make_url(url)
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def upgrade_database(url: str) -> tuple[SchemaState, SchemaState]:
    """Brings the database at ``url`` to head (creating an embedded one that
    does not exist yet): its state before and after."""
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with _connect(url) as conn:
        before = ensure_schema(conn, migrate=True)
        return before, schema_state(conn)


def database_state(url: str) -> SchemaState:
    """Where the database at ``url`` stands; an embedded one that does not
    exist yet is not created, and has no schema."""
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        head = ScriptDirectory(str(HERE)).get_current_head()
        assert head is not None, "no revisions"
        return SchemaState(database_name(url), None, head, known=True)
    with _connect(url) as conn:
        return schema_state(conn)


def _sqlite_path(url: str) -> Path | None:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@contextmanager
def _connect(url: str) -> Iterator[Connection]:
    parsed = sa.make_url(url)
    # the backend's sync driver: the CLI runs Alembic without an event loop
    engine = sa.create_engine(parsed.set(drivername=parsed.get_backend_name()))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()
