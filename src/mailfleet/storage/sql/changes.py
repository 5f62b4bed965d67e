"""What every SQL engine's change log writes (decision 0010): the shape of a
change and when the log is cut. Each engine numbers and stores them in its own
write path (SQLite: ``storage/embedded/sqlite_changes.py``; PostgreSQL:
``storage/distributed/pg_changes.py``)."""

from __future__ import annotations

import json
from typing import Any


def message_state(
    message_id: int, folder_id: int, thread_id: int, is_read: object, is_flagged: object
) -> dict[str, object]:
    """What a ``message.*`` change carries: where the message is and its flags."""
    return {
        "id": message_id,
        "folder_id": folder_id,
        "thread_id": thread_id,
        "is_read": bool(is_read),
        "is_flagged": bool(is_flagged),
    }


def folder_state(folder_id: int, row: Any) -> dict[str, object]:
    """A ``folder.updated`` change; ``row``: (name, role, total, unread) as stored now."""
    name, role, total, unread = row
    return {"id": folder_id, "name": name, "role": role, "total": total, "unread": unread}


def encode(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def prune_through(head: int, kept_after: int, keep: int) -> int | None:
    """The sequence number to cut the log at, once an account holds ``keep``
    changes plus a slack (so pruning is spread over many writes); else None."""
    if head - kept_after > keep + max(64, keep // 8):
        return head - keep
    return None
