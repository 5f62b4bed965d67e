"""What every SQL search engine shares: the non-text operators of a query
(``in:``, ``is:``, ``has:``, ``before:``, ``after:``) as conditions on the live
``messages`` rows, so moving, flagging or reading mail changes no index entry
(decision 0007). Each engine turns the text parts into its own index's
language (SQLite FTS5: ``storage/embedded/sqlite_search.py``; PostgreSQL
tsvector: ``storage/distributed/pg_search.py``)."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from mailfleet.search.query import Filter
from mailfleet.storage.sql.schema import messages


def filter_condition(node: Filter, folders: Mapping[str, frozenset[int]]) -> ColumnElement[bool]:
    """``folders`` resolves each ``in:`` value to the folder ids it names."""
    if node.kind == "in":
        ids = folders.get(str(node.value), frozenset())
        return messages.c.folder_id.in_(sorted(ids)) if ids else sa.false()
    if node.kind == "is":
        return {
            "read": messages.c.is_read.is_(True),
            "unread": messages.c.is_read.is_(False),
            "flagged": messages.c.is_flagged.is_(True),
        }[str(node.value)]
    if node.kind == "has":
        return messages.c.has_attachments.is_(True)
    if node.kind == "before":
        return messages.c.received_at < int(node.value)
    if node.kind == "after":
        return messages.c.received_at >= int(node.value)
    raise ValueError(f"unknown filter {node.kind!r}")
