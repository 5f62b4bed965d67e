"""A sharded PostgreSQL metadata store: one directory database (domains,
accounts, sessions, DKIM keys, and ``placements``: the shard of each account)
and N mailbox shard databases, each optionally with a streaming replica
(decision 0016).

Every mailbox query goes to its account's shard only. A placement is read
from the directory once and kept in this process for ``PLACEMENT_TTL_SECONDS``;
writes never trust a stale one blindly: each write transaction locks the
account's ``mailbox_state`` row on the shard it went to, and a shard that no
longer holds the account (moved away) or is moving it (``moving_to`` set)
refuses, so the writer reads the placement again and follows it. A move waits
out the TTL before it deletes the old copy, so a read that used a stale
placement still finds the mailbox whole.

New accounts go to the shard holding the fewest (``shard_loads``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from mailfleet.storage.distributed.pg_database import PgDatabase
from mailfleet.storage.errors import BackendUnavailable

# How long a process trusts a placement it read; ``move_account`` waits this
# long (and a margin) before deleting an account's rows on the old shard.
PLACEMENT_TTL_SECONDS = 5.0
_CACHED_PLACEMENTS = 200_000

# The shard of a metadata URL that names no shards: the directory database
# holds the mailboxes too.
DEFAULT_SHARD = "main"


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """One mailbox shard: a stable name (what ``placements`` records, so a URL
    can change, say to a promoted replica, without touching placements), its
    primary and, optionally, a streaming replica for listings and search."""

    name: str
    url: str
    replica_url: str | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    shard: str
    state: str  # "active" | "moving"
    moving_to: str | None


class PgCluster:
    """The directory and the shards, opened by the first store using them and
    closed by the last."""

    def __init__(
        self,
        directory_url: str,
        shards: Sequence[ShardConfig] = (),
        *,
        migrate: bool = True,
        pool_size: int = 10,
        placement_ttl: float = PLACEMENT_TTL_SECONDS,
    ) -> None:
        self.placement_ttl = placement_ttl
        self.directory = PgDatabase(directory_url, migrate=migrate, pool_size=pool_size)
        if not shards:
            shards = [ShardConfig(DEFAULT_SHARD, directory_url)]
        names = [s.name for s in shards]
        if len(set(names)) != len(names):
            raise ValueError(f"shard names must differ: {names}")
        self.shard_configs = list(shards)
        self.shards: dict[str, PgDatabase] = {}
        for shard in shards:
            if shard.url == directory_url and not shard.replica_url:
                self.shards[shard.name] = self.directory
            else:
                self.shards[shard.name] = PgDatabase(
                    shard.url, replica_url=shard.replica_url, migrate=migrate, pool_size=pool_size
                )
        self.default_shard = names[0]
        self._placements: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self._users = 0

    def databases(self) -> list[PgDatabase]:
        """Each database once: the directory first."""
        found: list[PgDatabase] = [self.directory]
        for database in self.shards.values():
            if all(database is not d for d in found):
                found.append(database)
        return found

    def shard_databases(self) -> list[PgDatabase]:
        """Each shard's database once (shards may share one)."""
        found: list[PgDatabase] = []
        for database in self.shards.values():
            if all(database is not d for d in found):
                found.append(database)
        return found

    async def open(self) -> None:
        if self._users == 0:
            opened: list[PgDatabase] = []
            try:
                for database in self.databases():
                    await database.open()
                    opened.append(database)
                async with self.directory.write() as conn:
                    await conn.executemany(
                        "INSERT INTO shard_loads (shard, accounts) VALUES ($1, 0)"
                        " ON CONFLICT (shard) DO NOTHING",
                        [(name,) for name in self.shards],
                    )
            except BaseException:
                for database in reversed(opened):
                    await database.close()
                raise
        self._users += 1

    async def close(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            self._placements.clear()
            for database in reversed(self.databases()):
                await database.close()

    # -- placement ------------------------------------------------------------

    def cached_shard(self, account_id: int) -> str | None:
        found = self._placements.get(account_id)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def forget(self, account_id: int) -> None:
        self._placements.pop(account_id, None)

    def _remember(self, account_id: int, shard: str) -> None:
        self._placements[account_id] = (shard, time.monotonic() + self.placement_ttl)
        self._placements.move_to_end(account_id)
        while len(self._placements) > _CACHED_PLACEMENTS:
            self._placements.popitem(last=False)

    async def placement(self, account_id: int) -> Placement | None:
        """Read from the directory, never from the cache."""
        async with self.directory.connection() as conn:
            row = await conn.fetchrow(
                "SELECT shard, state, moving_to FROM placements WHERE account_id = $1",
                account_id,
            )
        return Placement(row[0], row[1], row[2]) if row is not None else None

    async def shard_name(self, account_id: int, *, fresh: bool = False) -> str:
        """The shard holding the account (the default shard for an account
        the directory has not placed: it has no mailbox anywhere)."""
        if not fresh:
            cached = self.cached_shard(account_id)
            if cached is not None:
                return cached
        found = await self.placement(account_id)
        if found is None:
            return self.default_shard
        if found.shard not in self.shards:
            raise BackendUnavailable(
                f"account {account_id} is on shard {found.shard!r}, which this process's"
                f" settings do not name (storage.metadata_shards)"
            )
        self._remember(account_id, found.shard)
        return found.shard

    async def shard(self, account_id: int, *, fresh: bool = False) -> PgDatabase:
        return self.shards[await self.shard_name(account_id, fresh=fresh)]

    async def place(self, account_id: int) -> str:
        """The account's shard: the one it is on, or the least loaded one,
        recorded in the directory before its mailbox is made there."""
        async with self.directory.write() as conn:
            row = await conn.fetchrow(
                "SELECT shard FROM placements WHERE account_id = $1", account_id
            )
            if row is not None:
                shard = str(row[0])
            else:
                # Row locks on the loads serialize concurrent sign-ups, so two
                # of them do not both pick the same "least loaded" shard.
                loads = await conn.fetch(
                    "SELECT shard, accounts FROM shard_loads WHERE shard = ANY($1::text[])"
                    " ORDER BY shard FOR UPDATE",
                    list(self.shards),
                )
                counts = {r[0]: int(r[1]) for r in loads}
                shard = min(self.shards, key=lambda name: (counts.get(name, 0), name))
                await conn.execute(
                    "INSERT INTO placements (account_id, shard, state, moving_to, updated_at)"
                    " VALUES ($1, $2, 'active', NULL, $3)",
                    account_id,
                    shard,
                    int(time.time() * 1000),
                )
                await conn.execute(
                    "UPDATE shard_loads SET accounts = accounts + 1 WHERE shard = $1", shard
                )
        if shard in self.shards:
            self._remember(account_id, shard)
        return shard
