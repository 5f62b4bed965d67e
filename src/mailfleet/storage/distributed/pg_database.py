"""One PostgreSQL database (the directory, or one mailbox shard): a pool of
asyncpg connections that runs the portable statements of ``storage/sql``
compiled for PostgreSQL (decision 0013: compiled once, run by the driver),
an optional pool on its streaming replica for reads that may be slightly
stale, and the Alembic migrations at open.

Writes are transactions on the primary; asyncpg returns from ``COMMIT`` only
once the server has flushed it (``synchronous_commit`` on, the default), so a
method that returns has made its write durable (and, with
``synchronous_standby_names`` set on the server, replicated).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from mailfleet.storage.errors import BackendUnavailable, DuplicateKey
from mailfleet.storage.migrations import SchemaState, ensure_schema, schema_state
from mailfleet.storage.sql.query import Query

DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
# Any constant: every process that migrates a database takes this advisory
# lock first, so two fleet members starting together do not both run Alembic.
_MIGRATION_LOCK = 0x6D61696C666C74


def asyncpg_dsn(url: str) -> str:
    """``postgresql://`` or ``postgresql+asyncpg://`` → what asyncpg takes.

    Several servers (a shard's primary and its standby, for failover) are
    written as SQLAlchemy writes them, ``postgresql://USER@/DB?host=H1:P1&
    host=H2:P2&target_session_attrs=read-write``; asyncpg wants them in the
    address part, ``postgresql://USER@H1:P1,H2:P2/DB?...``, and tries each in
    turn for a server of the kind ``target_session_attrs`` asks for."""
    parsed = sa.make_url(url).set(drivername="postgresql")
    hosts = parsed.query.get("host")
    if not isinstance(hosts, tuple):
        return parsed.render_as_string(hide_password=False)
    if parsed.host:
        raise ValueError(
            f"{database_label(url)}: name the servers in host= parameters or before the"
            " database, not both"
        )
    rest = parsed.difference_update_query(["host"])
    plain = rest.render_as_string(hide_password=False)  # postgresql://USER@/DB?...
    head, _, tail = plain.partition("://")
    credentials, at, path = tail.rpartition("@")
    return f"{head}://{credentials}{at}{','.join(hosts)}{path}"


def sqlalchemy_url(url: str) -> str:
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def database_label(url: str) -> str:
    """The URL as an operator wrote it, without a password: for messages."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=True)


# Errors that mean "the server cannot be reached or is going away": try later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ReadOnlySQLTransactionError,  # a replica, or a primary being demoted
)


@contextmanager
def storage_errors(label: str) -> Iterator[None]:
    """Driver errors as the storage errors every implementation raises."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateKey(str(exc)) from exc
    except _UNAVAILABLE as exc:
        raise BackendUnavailable(f"postgresql {label}: {exc}") from exc


def _on_standby(conn: Any) -> bool:
    """Whether the server is a standby now: PostgreSQL 14+ reports
    ``in_hot_standby`` at connect and again when a standby is promoted, so
    this asks nothing of the server."""
    return getattr(conn.get_settings(), "in_hot_standby", "on") == "on"


class _ReadTransaction:
    """``async with database.read() as session``: one snapshot (a read-only
    repeatable-read transaction), so the statements of one read agree."""

    __slots__ = ("_conn", "_database", "_pool", "_tx")

    def __init__(self, database: PgDatabase, pool: asyncpg.Pool | None) -> None:
        self._database = database
        self._pool = pool
        self._conn: Any = None
        self._tx: Any = None

    async def __aenter__(self) -> _ReadTransaction:
        pool = self._pool or self._database.primary_pool()
        with storage_errors(self._database.label):
            self._conn = await pool.acquire()
            try:
                self._tx = self._conn.transaction(isolation="repeatable_read", readonly=True)
                await self._tx.start()
            except BaseException:
                await pool.release(self._conn)
                raise
        self._pool = pool
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool: asyncpg.Pool | None = self._pool
        assert pool is not None
        looks_for_standby = pool is self._database.replica_pool
        try:
            with storage_errors(self._database.label):
                if exc is None:
                    await self._tx.commit()
                else:
                    await self._tx.rollback()
                if looks_for_standby and not _on_standby(self._conn):
                    await self._conn.close(timeout=1)
        finally:
            await pool.release(self._conn)

    async def all(self, query: Query, **params: Any) -> Sequence[Any]:
        sql, args = query.bind(DIALECT, params)
        with storage_errors(self._database.label):
            rows: Sequence[Any] = await self._conn.fetch(sql, *args)
            return rows

    async def first(self, query: Query, **params: Any) -> Any | None:
        sql, args = query.bind(DIALECT, params)
        with storage_errors(self._database.label):
            return await self._conn.fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """A statement built for one call (search)."""
        with storage_errors(self._database.label):
            rows: Sequence[Any] = await self._conn.fetch(sql, *args)
            return rows


class _StaleReads:
    """The replica's ``ReadSessions`` (``storage/sql/query.py``)."""

    def __init__(self, database: PgDatabase) -> None:
        self.database = database

    def read(self) -> _ReadTransaction:
        return self.database.read(stale_ok=True)


class PgDatabase:
    """Opened by the first store that uses it (migrating it when ``migrate``,
    else refusing a schema not at head), closed by the last."""

    def __init__(
        self,
        url: str,
        *,
        replica_url: str | None = None,
        migrate: bool = True,
        pool_size: int = 10,
    ) -> None:
        self.url = url
        self.replica_url = replica_url
        # A replica URL that names one server is that server whatever it is;
        # one that names several chooses a standby among them when it can.
        self._replica_chooses = replica_url is not None and isinstance(
            sa.make_url(replica_url).query.get("host"), tuple
        )
        self.migrate = migrate
        self.pool_size = pool_size
        self.label = database_label(url)
        self.stale_reads = _StaleReads(self)
        self._pool: asyncpg.Pool | None = None
        self._replica: asyncpg.Pool | None = None
        self._users = 0

    async def open(self) -> None:
        if self._users == 0:
            await self.ensure_schema(migrate=self.migrate)
            with storage_errors(self.label):
                self._pool = await asyncpg.create_pool(
                    asyncpg_dsn(self.url), min_size=1, max_size=self.pool_size
                )
                if self.replica_url:
                    try:
                        self._replica = await asyncpg.create_pool(
                            asyncpg_dsn(self.replica_url), min_size=1, max_size=self.pool_size
                        )
                    except BaseException:
                        await self._pool.close()
                        self._pool = None
                        raise
        self._users += 1

    async def close(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            pools = [p for p in (self._pool, self._replica) if p is not None]
            self._pool = self._replica = None
            for pool in pools:
                await pool.close()

    @property
    def replica_pool(self) -> asyncpg.Pool | None:
        """Stale reads' connections when their URL names several servers
        (None when it names one, the replica pool or not). Such a URL prefers
        a standby but takes the primary when no standby answers (a failover,
        a standby being rebuilt); a connection that finds itself on a primary
        (so connected, or its standby since promoted) is closed after its
        read, so that the next one looks for a standby again instead of
        loading the primary for as long as the connection lives."""
        return self._replica if self._replica_chooses else None

    def primary_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise BackendUnavailable(f"postgresql {self.label}: the database is closed")
        return self._pool

    def read(self, *, stale_ok: bool = False) -> _ReadTransaction:
        """One read on the primary, or on the replica when ``stale_ok`` and
        one is configured (listings and search: a replica may lag)."""
        return _ReadTransaction(self, self._replica if stale_ok else None)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction on the primary, committed when the block ends."""
        with storage_errors(self.label):
            async with self.primary_pool().acquire() as conn, conn.transaction():
                yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A primary connection outside any transaction (the caller opens its own)."""
        with storage_errors(self.label):
            async with self.primary_pool().acquire() as conn:
                yield conn

    async def wait_for_replica(self, *, timeout: float) -> None:
        """Returns once the replica (if any) has replayed every commit the
        primary had made when this was called."""
        if self._replica is None:
            return
        async with self.connection() as conn:
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        deadline = asyncio.get_running_loop().time() + timeout
        with storage_errors(self.label):
            async with self._replica.acquire() as conn:
                while not await conn.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn
                ):
                    if asyncio.get_running_loop().time() > deadline:
                        raise BackendUnavailable(
                            f"postgresql {self.label}: the replica is more than {timeout:.0f} s"
                            " behind its primary"
                        )
                    await asyncio.sleep(0.02)

    async def ensure_schema(self, *, migrate: bool) -> SchemaState:
        """Alembic through SQLAlchemy's asyncpg dialect (no second driver):
        upgrade to head when ``migrate``, else refuse a schema not at head."""
        state: SchemaState = await self._with_migrations(
            lambda conn: ensure_schema(conn, migrate=migrate)
        )
        return state

    async def schema_state(self) -> SchemaState:
        state: SchemaState = await self._with_migrations(schema_state)
        return state

    async def _with_migrations(self, work: Any) -> Any:
        engine: AsyncEngine = create_async_engine(sqlalchemy_url(self.url), poolclass=NullPool)
        try:
            with storage_errors(self.label):
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                    return await conn.run_sync(work)
        except sa.exc.DBAPIError as exc:
            if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
                raise BackendUnavailable(f"postgresql {self.label}: {exc.orig}") from exc
            raise
        finally:
            await engine.dispose()
