"""Thread assignment in ``store_messages_sync`` (SQLite's writer thread): the
same steps as ``storage/sql/threads.py`` on a plain sqlite3 connection, inside
the caller's transaction. The one writer thread serializes every store, so
two concurrent arrivals of one thread always see each other's keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailfleet.storage.embedded.sqlite_changes import ChangeLog, message_state
from mailfleet.storage.interfaces import NewMessage
from mailfleet.storage.sql.threads import keys_by_account, rethreaded
from mailfleet.threadkeys import ThreadKey, plan_threads

_CHUNK = 500


def assign_threads_sync(
    conn: sqlite3.Connection, fresh: Sequence[NewMessage], log: ChangeLog
) -> list[NewMessage]:
    """The new messages with their threads; threads they link are merged
    (each stored message that changes thread is a ``message.updated``)."""
    stored: dict[tuple[int, str], ThreadKey] = {}
    for account_id, keys in keys_by_account(fresh).items():
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = conn.execute(
                "SELECT ref, thread_id, seen_at FROM thread_keys"
                f" WHERE account_id = ? AND ref IN ({','.join('?' * len(chunk))})",
                [account_id, *chunk],
            )
            stored.update({(account_id, ref): ThreadKey(t, seen) for ref, t, seen in rows})
    plan = plan_threads(fresh, stored)
    for (account_id, survivor), absorbed in plan.merge_groups().items():
        marks = ",".join("?" * len(absorbed))
        moved = conn.execute(
            "UPDATE messages SET thread_id = ?"
            f" WHERE account_id = ? AND thread_id IN ({marks})"
            " RETURNING id, folder_id, is_read, is_flagged",
            [survivor, account_id, *absorbed],
        ).fetchall()
        for message_id, folder_id, is_read, is_flagged in moved:
            log.add(
                account_id,
                "message.updated",
                message_state(message_id, folder_id, survivor, is_read, is_flagged),
            )
        conn.execute(
            f"UPDATE thread_keys SET thread_id = ? WHERE account_id = ? AND thread_id IN ({marks})",
            [survivor, account_id, *absorbed],
        )
    conn.executemany(
        "UPDATE thread_keys SET thread_id = ?, seen_at = ? WHERE account_id = ? AND ref = ?",
        [(k.thread_id, k.seen_at, k.account_id, k.ref) for k in plan.updates],
    )
    conn.executemany(
        "INSERT INTO thread_keys (account_id, ref, thread_id, seen_at) VALUES (?, ?, ?, ?)",
        [(k.account_id, k.ref, k.thread_id, k.seen_at) for k in plan.inserts],
    )
    return rethreaded(fresh, plan)
