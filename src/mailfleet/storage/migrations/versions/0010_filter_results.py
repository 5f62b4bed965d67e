"""what the filters said of each message: reasons and the headers they added

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 01:40:00

``spam_reasons``: JSON ``[[name, score, detail], ...]`` (the API's
``spam.reasons``); ``filter_headers``: the ``Authentication-Results`` and
``X-Spam-*`` lines the pipeline wrote, put in front of the raw mail when it
is read (the raw blob stays as received, shared by every copy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("spam_reasons", sa.Text, nullable=True))
        batch.add_column(sa.Column("filter_headers", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("filter_headers")
        batch.drop_column("spam_reasons")
