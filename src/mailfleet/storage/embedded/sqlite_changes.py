"""The change log's write side on SQLite: a write step records what it changed,
and the log numbers and writes those changes inside the same transaction
(decision 0010).

Each account's sequence (``mailbox_state.modseq``) is taken once per step for
all of the step's changes of that account, so a batch of 64 deliveries costs
one counter update per account and one multi-row insert. Old changes are cut
when an account holds ``keep`` plus a slack of them, so the cost of pruning is
spread over many writes; ``kept_after`` then tells readers where the log
starts."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from mailfleet.storage.sql.changes import encode, folder_state, message_state, prune_through

__all__ = ["ChangeLog", "message_state"]
_INSERT = "INSERT INTO changes (account_id, seq, kind, data, at) VALUES (?, ?, ?, ?, ?)"


class ChangeLog:
    def __init__(self, conn: sqlite3.Connection, keep: int) -> None:
        self.conn = conn
        self.keep = keep
        self._pending: dict[int, list[tuple[str, dict[str, Any]]]] = {}

    def add(self, account_id: int, kind: str, data: dict[str, Any]) -> None:
        self._pending.setdefault(account_id, []).append((kind, data))

    def folder_counts(self, account_id: int, folder_id: int, total: int, unread: int) -> None:
        """Moves the folder's counters and records its new state."""
        if not (total or unread):
            return
        row = self.conn.execute(
            "UPDATE folders SET total = total + ?, unread = unread + ?"
            " WHERE account_id = ? AND id = ? RETURNING name, role, total, unread",
            (total, unread, account_id, folder_id),
        ).fetchone()
        if row is not None:
            self.folder_updated(account_id, folder_id, row)

    def folder_updated(self, account_id: int, folder_id: int, row: Any) -> None:
        """``row``: (name, role, total, unread) as stored now."""
        self.add(account_id, "folder.updated", folder_state(folder_id, row))

    def write(self) -> dict[int, int]:
        """Numbers and stores the recorded changes; ``{account_id: head}``."""
        heads: dict[int, int] = {}
        now = int(time.time() * 1000)
        rows: list[tuple[int, int, str, str, int]] = []
        for account_id, recorded in self._pending.items():
            state = self.conn.execute(
                "UPDATE mailbox_state SET modseq = modseq + ? WHERE account_id = ?"
                " RETURNING modseq, kept_after",
                (len(recorded), account_id),
            ).fetchone()
            if state is None:  # a mailbox older than the log
                self.conn.execute(
                    "INSERT INTO mailbox_state (account_id, modseq, kept_after) VALUES (?, ?, 0)",
                    (account_id, len(recorded)),
                )
                state = (len(recorded), 0)
            head, kept_after = int(state[0]), int(state[1])
            first = head - len(recorded) + 1
            rows.extend(
                (account_id, first + i, kind, encode(data), now)
                for i, (kind, data) in enumerate(recorded)
            )
            heads[account_id] = head
            through = prune_through(head, kept_after, self.keep)
            if through is not None:
                self._prune(account_id, through)
        self.conn.executemany(_INSERT, rows)
        self._pending.clear()
        return heads

    def _prune(self, account_id: int, through: int) -> None:
        self.conn.execute(
            "DELETE FROM changes WHERE account_id = ? AND seq <= ?", (account_id, through)
        )
        self.conn.execute(
            "UPDATE mailbox_state SET kept_after = ? WHERE account_id = ?", (through, account_id)
        )
