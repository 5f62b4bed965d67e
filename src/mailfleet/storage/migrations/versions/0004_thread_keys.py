"""thread keys (Message-IDs and normalized subjects per account) and the thread index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00

``thread_keys`` is JWZ's id table kept per account (decision 0006):
``store_messages`` looks up a new message's keys there and writes its own.
``ix_messages_thread`` serves a thread's messages, merges and the listing
grouped by thread. Mail stored before this revision gets its keys here, one
account at a time, keeping the threads it has (the first thread to name a
key keeps it; no merges).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# -- the thread-key rules as they were at this revision --------------------------
# Frozen copy of ``mailfleet/threadkeys.py`` (then ``mailbox/threads.py``):
# a revision never imports live code, which may change after it is written.

_MAX_REFERENCES = 20
_MAX_ID_LENGTH = 250
_MAX_SUBJECT_KEY = 200
_SUBJECT_KEY_PREFIX = "subject:"
_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_REPLY_WORDS = r"re|fwd?|aw|wg|sv|vs|antw"
_PREFIX = re.compile(
    rf"\s*(?:(?P<tag>\[[^\[\]]*\])|(?:{_REPLY_WORDS})\s*(?:\[\d+\]|\(\d+\))?\s*[:：])",
    re.IGNORECASE,
)


def _valid_message_id(value: str | None) -> bool:
    return value is not None and len(value) <= _MAX_ID_LENGTH and bool(_MSG_ID.fullmatch(value))


def _message_id_keys(
    message_id: str | None, in_reply_to: str | None, references: Sequence[str]
) -> list[str]:
    candidates = [message_id, in_reply_to]
    valid_refs = [r for r in references if _valid_message_id(r)]
    candidates.extend(valid_refs[-_MAX_REFERENCES:])
    return [c for c in dict.fromkeys(candidates) if c is not None and _valid_message_id(c)]


def _subject_key(subject: str) -> str | None:
    text = " ".join(subject.casefold().split())
    while match := _PREFIX.match(text):
        text = text[match.end() :]
    normalized = text.strip()[:_MAX_SUBJECT_KEY].rstrip()
    return _SUBJECT_KEY_PREFIX + normalized if normalized else None


def upgrade() -> None:
    op.create_table(
        "thread_keys",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "ref"),
    )
    op.create_index("ix_thread_keys_thread", "thread_keys", ["account_id", "thread_id"])
    op.create_index(
        "ix_messages_thread",
        "messages",
        ["account_id", "thread_id", "received_at", "id", "folder_id", "is_read"],
    )
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    messages = sa.table(
        "messages",
        sa.column("account_id"),
        sa.column("id"),
        sa.column("thread_id"),
        sa.column("received_at"),
        sa.column("subject"),
        sa.column("message_id_header"),
        sa.column("in_reply_to"),
        sa.column("references"),
    )
    keys = sa.table(
        "thread_keys",
        sa.column("account_id"),
        sa.column("ref"),
        sa.column("thread_id"),
        sa.column("seen_at"),
    )
    account_ids = [r[0] for r in conn.execute(sa.select(messages.c.account_id).distinct())]
    for account_id in account_ids:
        table: dict[str, tuple[int, int]] = {}
        rows = conn.execute(
            sa.select(
                messages.c.thread_id,
                messages.c.received_at,
                messages.c.subject,
                messages.c.message_id_header,
                messages.c.in_reply_to,
                messages.c.references,
            )
            .where(messages.c.account_id == account_id)
            .order_by(messages.c.received_at, messages.c.id)
        )
        for row in rows:
            refs = json.loads(row.references)
            for ref in _message_id_keys(row.message_id_header, row.in_reply_to, refs):
                table.setdefault(ref, (row.thread_id, row.received_at))
            subject = _subject_key(row.subject)
            if subject:  # the newest message with the subject names it
                table[subject] = (row.thread_id, row.received_at)
        values = [
            {"account_id": account_id, "ref": ref, "thread_id": thread_id, "seen_at": seen_at}
            for ref, (thread_id, seen_at) in table.items()
        ]
        for start in range(0, len(values), 1000):
            conn.execute(keys.insert(), values[start : start + 1000])


def downgrade() -> None:
    op.drop_index("ix_messages_thread", table_name="messages")
    op.drop_index("ix_thread_keys_thread", table_name="thread_keys")
    op.drop_table("thread_keys")
