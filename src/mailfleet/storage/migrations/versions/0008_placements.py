"""account placement on shards, and the fence of an account being moved

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00

``placements`` (account → shard) and ``shard_loads`` (accounts per shard)
live in the directory database of a sharded PostgreSQL fleet; on SQLite, and
on every shard, they stay empty. ``mailbox_state.moving_to`` is set on an
account's old shard while ``mailfleet account move`` copies it: every write
there then refuses the account (decision 0016).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "placements",
        sa.Column("account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("shard", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("moving_to", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "shard_loads",
        sa.Column("shard", sa.Text(), nullable=False),
        sa.Column("accounts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    # Nullable, no default: a plain ADD COLUMN on SQLite and PostgreSQL alike.
    op.add_column("mailbox_state", sa.Column("moving_to", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("mailbox_state", "moving_to")
    op.drop_table("shard_loads")
    op.drop_table("placements")
