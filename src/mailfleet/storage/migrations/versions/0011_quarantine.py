"""quarantined inbound mail, global (in the directory database)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 04:40:00

One row per quarantined mail (a virus, a blocked attachment; decision 0021),
keyed by worker-in's ingest key so a mail processed twice is held once. The
raw mail stays in the blob store; ``ix_quarantine_raw_hash`` answers the blob
sweep's "does anything still name this blob?". Every metadata database gets
the table (the schema is one); only the directory database (SQLite's one
database) fills it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ingest_key", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("quarantined_at", sa.BigInteger, nullable=False),
        sa.Column("resolved_at", sa.BigInteger, nullable=True),
        sa.Column("mail_from", sa.Text, nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("client_ip", sa.Text, nullable=False),
        sa.Column("helo", sa.Text, nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("raw_hash", sa.Text, nullable=False),
        sa.Column("raw_size", sa.BigInteger, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("filter_headers", sa.Text, nullable=False),
    )
    op.create_index("ix_quarantine_status", "quarantine", ["status", "id"])
    op.create_index("ix_quarantine_raw_hash", "quarantine", ["raw_hash"])


def downgrade() -> None:
    op.drop_index("ix_quarantine_raw_hash", "quarantine")
    op.drop_index("ix_quarantine_status", "quarantine")
    op.drop_table("quarantine")
