"""an account's sending held for review (outbound abuse, issue 13)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 05:30:00

``accounts.held_reason`` and ``accounts.held_at``: set when the account's
outgoing mail scored as spam too often or it hit the send rate limit too
often (``delivery/abuse.py``), or by ``mailfleet user hold``; cleared by
``mailfleet user release``, which sets ``accounts.released_at``: the abuse
counts are kept per release, so a release starts them afresh in every
process. NULL held_reason: the account may send.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("held_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("held_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("released_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("released_at")
        batch.drop_column("held_at")
        batch.drop_column("held_reason")
