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

import sqlalchemy as sa
from alembic import op

from mailfleet.mailbox.threads import message_id_keys, subject_key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


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
            for ref in message_id_keys(row.message_id_header, row.in_reply_to, refs):
                table.setdefault(ref, (row.thread_id, row.received_at))
            subject = subject_key(row.subject)
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
