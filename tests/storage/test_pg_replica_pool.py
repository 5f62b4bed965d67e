"""A shard's stale reads (listings, search) go to its standby when its
replica URL can choose one (decision 0026). A failover or a rebuilt standby
leaves that URL's connections on a primary for a while; each is closed after
its read, so the next read looks for a standby again instead of loading the
primary for as long as the connection lives. A replica URL that names one
server keeps its connections whatever that server is.

A real standby is the fleet's (tests/fleet/test_replica_reads.py after
tests/fleet/test_failover.py); here both hosts are the one primary, which is
what every read of a chooser finds while no standby answers."""

from __future__ import annotations

import sqlalchemy as sa

from mailfleet.storage.distributed.pg_database import PgDatabase
from tests.support.postgres import fresh_databases


def _both_hosts_primary(url: str) -> str:
    parsed = sa.make_url(url)
    host = f"{parsed.host}:{parsed.port or 5432}"
    return sa.URL.create(
        parsed.drivername,
        username=parsed.username,
        database=parsed.database,
        query={"host": (host, host), "target_session_attrs": "prefer-standby"},
    ).render_as_string(hide_password=False)


async def _backend_pids(database: PgDatabase, reads: int) -> list[int]:
    pids = []
    for _ in range(reads):
        async with database.read(stale_ok=True) as session:
            (row,) = await session.fetch("SELECT pg_backend_pid() AS pid")
            pids.append(row["pid"])
    return pids


async def test_a_replica_url_that_found_a_primary_looks_for_a_standby_at_each_read() -> None:
    async with fresh_databases(1) as (url,):
        chooser = PgDatabase(url, replica_url=_both_hosts_primary(url), migrate=False)
        await chooser.open()
        try:
            pids = await _backend_pids(chooser, 4)
            # Each read a new connection: none stayed on the primary.
            assert len(set(pids)) == 4, pids
            async with chooser.read() as session:  # the primary pool is not concerned
                (first,) = await session.fetch("SELECT pg_backend_pid() AS pid")
            async with chooser.read() as session:
                (second,) = await session.fetch("SELECT pg_backend_pid() AS pid")
            assert first["pid"] == second["pid"]
        finally:
            await chooser.close()

        fixed = PgDatabase(url, replica_url=url, migrate=False)
        await fixed.open()
        try:
            pids = await _backend_pids(fixed, 4)
            assert len(set(pids)) == 1, pids
        finally:
            await fixed.close()
