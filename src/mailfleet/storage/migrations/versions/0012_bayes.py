"""the Bayes classifier's statistics, and what each message was trained as

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 04:45:00

``bayes_totals``: trained mails per class, per account and for the
database's global statistics (account 0); ``bayes_tokens``: per account (and
account 0) and token, how many spam and ham mails held it;
``messages.bayes_trained``: "spam", "ham" or NULL, so that training is
idempotent and a move out of Junk can undo a spam training (decision 0022).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("bayes_trained", sa.Text, nullable=True))
    op.create_table(
        "bayes_totals",
        sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("spam", sa.BigInteger, nullable=False),
        sa.Column("ham", sa.BigInteger, nullable=False),
        sa.Column("accounts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bayes_tokens",
        sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("token", sa.Text, primary_key=True),
        sa.Column("spam", sa.BigInteger, nullable=False),
        sa.Column("ham", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bayes_tokens")
    op.drop_table("bayes_totals")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("bayes_trained")
