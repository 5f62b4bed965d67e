"""index deliveries by status (worker-out's sweep for unqueued sends)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 21:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_status", "deliveries", ["status"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_status", table_name="deliveries")
