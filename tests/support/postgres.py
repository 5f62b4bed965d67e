"""Fresh PostgreSQL databases for tests, on the server named by
``MAILFLEET_TEST_POSTGRES_URL`` (default: the local server,
``postgresql://postgres@127.0.0.1:5432/postgres``, trust authentication).

Each test gets uniquely named databases, copied from a template migrated to
the schema head once (``CREATE DATABASE ... TEMPLATE``: tens of milliseconds,
against seconds for running every migration), and dropped when it ends. The
template's name carries a hash of the migration files, so a changed migration
makes a new one. When the server cannot be reached the test is skipped with
how to start it, or fails in CI (``tests/support/tools.py``)."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import sqlalchemy as sa

from mailfleet.storage.distributed.pg_database import PgDatabase, asyncpg_dsn
from mailfleet.storage.migrations import HERE as MIGRATIONS
from tests.support.tools import missing

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "mftest_"
_serial = itertools.count(1)
_template_ready: set[str] = set()


def server_url() -> str:
    return os.environ.get("MAILFLEET_TEST_POSTGRES_URL", DEFAULT_URL)


def database_url(name: str) -> str:
    return sa.make_url(server_url()).set(database=name).render_as_string(hide_password=False)


def _template_name() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(MIGRATIONS).rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{PREFIX}template_{digest.hexdigest()[:12]}"


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(asyncpg_dsn(server_url()), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        missing(
            f"PostgreSQL is not reachable at {server_url()} ({exc}): start it"
            " (`pg_ctlcluster 15 main start`) or point MAILFLEET_TEST_POSTGRES_URL at one"
        )
        raise AssertionError("unreachable") from exc


async def _ensure_template(admin: asyncpg.Connection) -> str:
    name = _template_name()
    if name in _template_ready:
        return name
    # Sessions of other worktrees may build it at the same moment.
    await admin.execute("SELECT pg_advisory_lock(hashtext($1))", name)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            building = f"{name}_{secrets.token_hex(4)}"
            await admin.execute(f'CREATE DATABASE "{building}"')
            database = PgDatabase(database_url(building))
            await database.ensure_schema(migrate=True)
            # Renamed once whole: a template never shows half a schema.
            await admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    finally:
        await admin.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
    _template_ready.add(name)
    return name


async def create_databases(count: int) -> list[str]:
    """URLs of ``count`` new databases at the schema head; the caller drops
    them with ``drop_databases``."""
    admin = await _admin()
    names: list[str] = []
    try:
        template = await _ensure_template(admin)
        for _ in range(count):
            name = f"{PREFIX}{os.getpid()}_{next(_serial)}_{secrets.token_hex(3)}"
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            names.append(name)
    except BaseException:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raise
    finally:
        await admin.close()
    return [database_url(n) for n in names]


async def drop_databases(urls: list[str]) -> None:
    admin = await _admin()
    try:
        for url in urls:
            name = sa.make_url(url).database
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def fresh_databases(count: int) -> AsyncIterator[list[str]]:
    """URLs of ``count`` new databases at the schema head, dropped on exit."""
    urls = await create_databases(count)
    try:
        yield urls
    finally:
        await drop_databases(urls)


@asynccontextmanager
async def empty_database() -> AsyncIterator[str]:
    """A new database with no schema (migration tests), dropped on exit."""
    admin = await _admin()
    name = f"{PREFIX}{os.getpid()}_{next(_serial)}_{secrets.token_hex(3)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
