"""full-text search index (SQLite FTS5)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:45:00

A contentless FTS5 table: it keeps only the inverted index, not a second copy
of the text. Its rowid is the message id, which is time-ordered, so "newest
first" is the index's own order. Text is tokenized by mailfleet before it is
indexed (``mailfleet.search.tokens``) into space-separated tokens; the
``ascii`` tokenizer then only splits on those spaces (it treats every
non-ASCII byte as part of a token), so the index holds exactly our tokens.
``owner`` holds one token per message naming the account, so a query is
scoped inside the index. SQLite 3.40 cannot delete from a contentless table
without the original text: entries of deleted messages stay until
``mailfleet index rebuild`` and are dropped by the join with ``messages``
every search makes.

On PostgreSQL (no database was ever at this revision there before this
branch existed) the same tokens go into ``search_documents``: one tsvector
per message, each token prefixed with its field (``s:`` subject, ``f:``
sender, ``r:`` recipients, ``b:`` body, ``a:`` attachment names, ``o:`` the
owner account), GIN-indexed (decision 0016). PostgreSQL can delete from it,
so a message deleted for good takes its document along.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE TABLE search_documents ("
            " account_id bigint NOT NULL, message_id bigint NOT NULL,"
            " document tsvector NOT NULL, PRIMARY KEY (account_id, message_id))"
        )
        op.execute("CREATE INDEX ix_search_documents ON search_documents USING gin (document)")
        return
    if dialect != "sqlite":
        raise NotImplementedError(f"no search index for {dialect}")
    op.execute(
        "CREATE VIRTUAL TABLE search_index USING fts5("
        "owner, subject, sender, recipients, body, attachments,"
        " content='', tokenize='ascii')"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE search_documents")
        return
    op.execute("DROP TABLE search_index")
