"""delivery claims: which attempt works on a recipient, and until when

worker-out claims a sent message's recipients before it delivers
(``MailboxStore.claim_deliveries``), so that a send queued twice (the outbox
sweep after the queue's dedupe window) never runs side by side.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: a plain ALTER TABLE ADD COLUMN on
    # SQLite and PostgreSQL alike, no table rewrite.
    op.add_column("deliveries", sa.Column("claimed_until", sa.BigInteger(), nullable=True))
    op.add_column("deliveries", sa.Column("claimed_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "claimed_by")
    op.drop_column("deliveries", "claimed_until")
