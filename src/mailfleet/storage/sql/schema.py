"""Tables of the metadata store. Mailbox tables lead with ``account_id`` so that
a mailbox is one key range (one shard); migrations in storage/migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

domains = sa.Table(
    "domains",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("open_signup", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

dkim_keys = sa.Table(
    "dkim_keys",
    metadata,
    sa.Column("domain", sa.Text, primary_key=True),
    sa.Column("selector", sa.Text, primary_key=True),
    sa.Column("private_key_pem", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Sending held for review (outbound abuse, migration 0013): why, and since
    # when; NULL while the account may send. released_at: the last release,
    # which starts its abuse counts afresh in every process.
    sa.Column("held_reason", sa.Text, nullable=True),
    sa.Column("held_at", sa.BigInteger, nullable=True),
    sa.Column("released_at", sa.BigInteger, nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("token_hash", sa.LargeBinary, primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

folders = sa.Table(
    "folders",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=True),
    # Kept in the same transaction as every message change: counting on read
    # costs 10 ms at a million mails.
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("unread", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("account_id", "name", name="uq_folders_name"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("folder_id", sa.BigInteger, nullable=False),
    sa.Column("thread_id", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("ingest_key", sa.Text, nullable=False),
    sa.Column("sender", sa.Text, nullable=True),  # JSON [email, name]
    sa.Column("to_addrs", sa.Text, nullable=False),  # JSON [[email, name], ...]
    sa.Column("cc_addrs", sa.Text, nullable=False),
    sa.Column("bcc_addrs", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("snippet", sa.Text, nullable=False),
    sa.Column("message_id_header", sa.Text, nullable=False),
    sa.Column("in_reply_to", sa.Text, nullable=True),
    sa.Column("references", sa.Text, nullable=False),  # JSON list
    sa.Column("raw_hash", sa.Text, nullable=False),
    sa.Column("raw_size", sa.BigInteger, nullable=False),
    sa.Column("body_hash", sa.Text, nullable=True),
    sa.Column("html_hash", sa.Text, nullable=True),
    sa.Column("is_read", sa.Boolean, nullable=False),
    sa.Column("is_flagged", sa.Boolean, nullable=False),
    sa.Column("has_attachments", sa.Boolean, nullable=False),
    sa.Column("spam_verdict", sa.Text, nullable=True),
    sa.Column("spam_score", sa.Float, nullable=True),
    sa.Column("spam_reasons", sa.Text, nullable=True),  # JSON [[name, score, detail], ...]
    sa.Column("filter_headers", sa.Text, nullable=True),  # put before the raw mail when read
    # What the Bayes classifier was taught this copy is ("spam", "ham", NULL:
    # nothing), so that a move teaches it once and a move back undoes it
    # (migration 0012).
    sa.Column("bayes_trained", sa.Text, nullable=True),
    sa.UniqueConstraint("account_id", "ingest_key", name="uq_messages_ingest"),
    # "folder, newest first" and "folder, unread, newest first", served directly.
    sa.Index("ix_messages_folder", "account_id", "folder_id", "received_at", "id"),
    sa.Index("ix_messages_folder_read", "account_id", "folder_id", "is_read", "received_at", "id"),
    sa.Index("ix_messages_msgid", "account_id", "message_id_header"),
    # A thread's messages in order (GET /v1/threads, merges, counts), and
    # "has this thread a newer message in this folder" answered from the
    # index alone (listing grouped by thread: storage/sql/threads.py).
    sa.Index(
        "ix_messages_thread", "account_id", "thread_id", "received_at", "id", "folder_id", "is_read"
    ),
    # "Does any copy, in any account, name this blob?" (the blob sweep,
    # decision 0018): one probe per hash. Bodies are often absent.
    sa.Index("ix_messages_raw_hash", "raw_hash"),
    sa.Index(
        "ix_messages_body_hash",
        "body_hash",
        sqlite_where=sa.text("body_hash IS NOT NULL"),
        postgresql_where=sa.text("body_hash IS NOT NULL"),
    ),
    sa.Index(
        "ix_messages_html_hash",
        "html_hash",
        sqlite_where=sa.text("html_hash IS NOT NULL"),
        postgresql_where=sa.text("html_hash IS NOT NULL"),
    ),
)

message_attachments = sa.Table(
    "message_attachments",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("blob_hash", sa.Text, nullable=False),
    sa.Column("content_id", sa.Text, nullable=True),
    sa.Column("inline", sa.Boolean, nullable=False),
    sa.Index("ix_message_attachments_blob", "blob_hash"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("next_attempt_at", sa.BigInteger, nullable=True),
    # An attempt working on this recipient (``claim_deliveries``): until when
    # (ms) and which queue item; cleared by ``set_deliveries`` (migration 0007).
    sa.Column("claimed_until", sa.BigInteger, nullable=True),
    sa.Column("claimed_by", sa.Text, nullable=True),
    # worker-out's sweep for sends a crash left unqueued (few rows are "queued").
    sa.Index("ix_deliveries_status", "status"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("blob_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_uploads_blob", "blob_hash"),
)

# Threading (threadkeys.py, decision 0006): every Message-ID an account's
# mail names (``<...>``) and every normalized subject (``subject:...``), mapped
# to its thread; ``seen_at`` is when the newest message carrying it arrived.
thread_keys = sa.Table(
    "thread_keys",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ref", sa.Text, primary_key=True),
    sa.Column("thread_id", sa.BigInteger, nullable=False),
    sa.Column("seen_at", sa.BigInteger, nullable=False),
    sa.Index("ix_thread_keys_thread", "account_id", "thread_id"),
)

# The change log (decision 0010): ``modseq`` is the account's newest sequence
# number; ``changes`` keeps those above ``kept_after``, one row per change,
# written in the same transaction as the change itself.
mailbox_state = sa.Table(
    "mailbox_state",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("modseq", sa.BigInteger, nullable=False),
    sa.Column("kept_after", sa.BigInteger, nullable=False),
    # Set on the old shard while the account moves (migration 0008): every
    # write there refuses the account and waits for its new placement.
    sa.Column("moving_to", sa.Text, nullable=True),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON object
    sa.Column("at", sa.BigInteger, nullable=False),
)

# Placement (migration 0008; used by the PostgreSQL directory database of a
# sharded fleet, empty on SQLite, whose one database is the only shard): the
# shard holding each account's mailbox, recorded per account so that an
# account can move, and how many accounts each shard holds, so that a new
# account goes to the least loaded.
placements = sa.Table(
    "placements",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("shard", sa.Text, nullable=False),
    # "moving" while ``mailfleet account move`` copies it to ``moving_to``
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("moving_to", sa.Text, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

shard_loads = sa.Table(
    "shard_loads",
    metadata,
    sa.Column("shard", sa.Text, primary_key=True),
    sa.Column("accounts", sa.BigInteger, nullable=False),
)

# Quarantined inbound mail (migration 0011, decision 0021): global, in the
# directory database, so that administrators list it across every account;
# the raw mail stays in the blob store, named here while held.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ingest_key", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("quarantined_at", sa.BigInteger, nullable=False),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("mail_from", sa.Text, nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),  # JSON list
    sa.Column("client_ip", sa.Text, nullable=False),
    sa.Column("helo", sa.Text, nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("raw_hash", sa.Text, nullable=False),
    sa.Column("raw_size", sa.BigInteger, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON [[name, score, detail], ...]
    sa.Column("filter_headers", sa.Text, nullable=False),
    sa.Index("ix_quarantine_status", "status", "id"),
    sa.Index("ix_quarantine_raw_hash", "raw_hash"),
)

# The Bayes classifier's statistics (filters/bayes.py, decision 0022, migration
# 0012): per account, how many of its trained mails were spam and ham, and of
# each token how many spam and ham mails held it. Account 0 (``GLOBAL_STATS``)
# is the global statistics of the database's accounts: on PostgreSQL one per
# shard, written in the same transaction as the account's own.
bayes_totals = sa.Table(
    "bayes_totals",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("spam", sa.BigInteger, nullable=False),
    sa.Column("ham", sa.BigInteger, nullable=False),
    # The global row only: how many accounts have trained (an account's own
    # taste alone is not "global").
    sa.Column("accounts", sa.BigInteger, nullable=False),
)

bayes_tokens = sa.Table(
    "bayes_tokens",
    metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("token", sa.Text, primary_key=True),
    sa.Column("spam", sa.BigInteger, nullable=False),
    sa.Column("ham", sa.BigInteger, nullable=False),
)
