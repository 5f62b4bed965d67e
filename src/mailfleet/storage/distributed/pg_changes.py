"""The change log's write side on a PostgreSQL shard (decision 0010): a write
step records what it changed and the log numbers and inserts those changes in
the step's transaction, as on SQLite (``storage/embedded/sqlite_changes.py``;
what a change holds and when the log is cut: ``storage/sql/changes.py``).

Every write transaction has locked the account's ``mailbox_state`` row first
(``pg_mailbox.lock_accounts``), so the sequence numbers an account's
transactions take follow their commit order: a reader that has seen ``n``
never later finds a change below ``n`` appear."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from mailfleet.storage.sql.changes import encode, folder_state, prune_through

_INSERT = (
    "INSERT INTO changes (account_id, seq, kind, data, at)"
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])"
)


class PgChangeLog:
    def __init__(self, conn: asyncpg.Connection, keep: int) -> None:
        self.conn = conn
        self.keep = keep
        self._pending: dict[int, list[tuple[str, dict[str, Any]]]] = {}

    def add(self, account_id: int, kind: str, data: dict[str, Any]) -> None:
        self._pending.setdefault(account_id, []).append((kind, data))

    async def folder_counts(self, account_id: int, folder_id: int, total: int, unread: int) -> None:
        """Moves the folder's counters and records its new state."""
        if not (total or unread):
            return
        row = await self.conn.fetchrow(
            "UPDATE folders SET total = total + $1, unread = unread + $2"
            " WHERE account_id = $3 AND id = $4 RETURNING name, role, total, unread",
            total,
            unread,
            account_id,
            folder_id,
        )
        if row is not None:
            self.folder_updated(account_id, folder_id, row)

    def folder_updated(self, account_id: int, folder_id: int, row: Any) -> None:
        """``row``: (name, role, total, unread) as stored now."""
        self.add(account_id, "folder.updated", folder_state(folder_id, tuple(row)))

    async def write(self) -> dict[int, int]:
        """Numbers and stores the recorded changes; ``{account_id: head}``."""
        heads: dict[int, int] = {}
        now = int(time.time() * 1000)
        columns: tuple[list[int], list[int], list[str], list[str], list[int]] = (
            [],
            [],
            [],
            [],
            [],
        )
        for account_id, recorded in self._pending.items():
            state = await self.conn.fetchrow(
                "UPDATE mailbox_state SET modseq = modseq + $1 WHERE account_id = $2"
                " RETURNING modseq, kept_after",
                len(recorded),
                account_id,
            )
            if state is None:  # no mailbox made for it (stores nothing else either)
                await self.conn.execute(
                    "INSERT INTO mailbox_state (account_id, modseq, kept_after) VALUES ($1, $2, 0)",
                    account_id,
                    len(recorded),
                )
                head, kept_after = len(recorded), 0
            else:
                head, kept_after = int(state[0]), int(state[1])
            first = head - len(recorded) + 1
            for i, (kind, data) in enumerate(recorded):
                columns[0].append(account_id)
                columns[1].append(first + i)
                columns[2].append(kind)
                columns[3].append(encode(data))
                columns[4].append(now)
            heads[account_id] = head
            through = prune_through(head, kept_after, self.keep)
            if through is not None:
                await self.conn.execute(
                    "DELETE FROM changes WHERE account_id = $1 AND seq <= $2", account_id, through
                )
                await self.conn.execute(
                    "UPDATE mailbox_state SET kept_after = $1 WHERE account_id = $2",
                    through,
                    account_id,
                )
        if columns[0]:
            await self.conn.execute(_INSERT, *columns)
        self._pending.clear()
        return heads
