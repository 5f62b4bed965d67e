"""per-account change log (mailbox_state, changes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:00:00

Every mailbox change takes the account's next sequence number (``modseq`` in
``mailbox_state``) and a row in ``changes`` in the same transaction. The log
keeps the changes above ``kept_after``; a reader behind that is told to
refetch. Existing accounts start at 0 with nothing kept before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_state",
        sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("modseq", sa.BigInteger, nullable=False),
        sa.Column("kept_after", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "changes",
        sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO mailbox_state (account_id, modseq, kept_after)"
        " SELECT DISTINCT account_id, 0, 0 FROM folders"
    )


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_table("mailbox_state")
