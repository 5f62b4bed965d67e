"""Search index implementations: each comes with the mailbox store that fills
it (the suite stores mail through the mailbox and searches the index)."""

from __future__ import annotations

from ..backends import register
from .mailbox import postgresql_mailbox, sqlite_mailbox

register("search", "embedded", "sqlite")(sqlite_mailbox)
register("search", "distributed", "postgresql")(postgresql_mailbox)
