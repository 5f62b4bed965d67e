"""What a client receives: one JSON object per change, and the cursor that
names a position in an account's change log (API.md, "Realtime")."""

from __future__ import annotations

import re
from typing import Any

from mailfleet.errors import BadInput
from mailfleet.storage.interfaces import Change

Event = dict[str, Any]

_CURSOR = re.compile(r"[0-9]{1,19}")
_MAX_CURSOR = 2**63 - 1


def parse_cursor(text: str | None) -> int | None:
    """A client's cursor; ``None`` (or empty) means "from now on"."""
    if text is None or text == "":
        return None
    if not _CURSOR.fullmatch(text) or int(text) > _MAX_CURSOR:
        raise BadInput(
            "cursor must be the cursor of an event received earlier (a non-negative integer)",
            code="bad_cursor",
        )
    return int(text)


def _client_value(key: str, value: Any) -> Any:
    # Ids are 63-bit; JavaScript numbers hold 53 bits, so the API writes every
    # id as a string, and events do the same.
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (key == "id" or key.endswith("_id"))
    ):
        return str(value)
    return value


def change_event(change: Change) -> Event:
    data = {key: _client_value(key, value) for key, value in change.data.items()}
    return {"type": change.kind, "cursor": str(change.seq), "data": data}


def reset_event(head: int) -> Event:
    """The client's state may be stale: refetch folders and lists, then go on
    from ``head``."""
    return {"type": "reset", "cursor": str(head)}
