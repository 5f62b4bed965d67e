"""indexes that answer "does any row name this blob?"

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00

The blob sweep (decision 0018) frees a blob only when no message, attachment
or upload names it; on every shard that is one index probe per hash and
column. Plain ``CREATE INDEX``: a shard with much mail already should be
indexed ``CONCURRENTLY`` by hand before this runs (the names match, and
``if_not_exists`` then skips them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_raw_hash", "messages", ["raw_hash"], if_not_exists=True)
    for column in ("body_hash", "html_hash"):
        present = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            f"ix_messages_{column}",
            "messages",
            [column],
            sqlite_where=present,
            postgresql_where=present,
            if_not_exists=True,
        )
    op.create_index(
        "ix_message_attachments_blob", "message_attachments", ["blob_hash"], if_not_exists=True
    )
    op.create_index("ix_uploads_blob", "uploads", ["blob_hash"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_uploads_blob", "uploads")
    op.drop_index("ix_message_attachments_blob", "message_attachments")
    for column in ("html_hash", "body_hash", "raw_hash"):
        op.drop_index(f"ix_messages_{column}", "messages")
