"""Verified bearer tokens, kept so that a request's token check is a dict
lookup instead of two reads of the directory (decision 0013).

What a cache must never do is keep a session alive after it ended. Every
change that ends sessions (log out, new password, account disabled) is
published on the event bus as a revocation of the account, in every process,
before the call that made it returns; an entry is trusted only after the bus
has been read (``catch_up``), and an entry verified while a revocation came in
is not kept (the account's epoch moved). Entries are checked against the
directory again after ``max_age`` seconds whatever happens, which bounds the
harm of a revocation a stuck process never read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from mailfleet.ids import now_ms
from mailfleet.storage.interfaces import Account, EventBus


@dataclass(frozen=True, slots=True)
class _Verified:
    account: Account
    expires_at: int  # the session's, in ms since the epoch
    verified_at: float  # monotonic


class VerifiedTokens:
    def __init__(
        self, events: EventBus, *, max_age: float = 60.0, max_entries: int = 100_000
    ) -> None:
        self.events = events
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._by_account: dict[int, set[bytes]] = {}
        self._epochs: dict[int, int] = {}
        events.on_revoked(self.revoke)

    def epoch(self, account_id: int) -> int:
        """Read before verifying a token; ``put`` keeps it only if unchanged."""
        return self._epochs.get(account_id, 0)

    def get(self, account_id: int, token_hash: bytes) -> tuple[Account, int] | None:
        """The account and its session's expiry (ms), if verified lately."""
        self.events.catch_up()
        entry = self._entries.get(token_hash)
        if entry is None or entry.account.id != account_id:
            return None
        if entry.expires_at <= now_ms() or time.monotonic() - entry.verified_at > self.max_age:
            self._drop(token_hash, entry)
            return None
        self._entries.move_to_end(token_hash)
        return entry.account, entry.expires_at

    def put(self, account: Account, token_hash: bytes, expires_at: int, epoch: int) -> None:
        if self.epoch(account.id) != epoch:
            return  # revoked while it was being verified: verify it again next time
        self._entries[token_hash] = _Verified(account, expires_at, time.monotonic())
        self._entries.move_to_end(token_hash)
        self._by_account.setdefault(account.id, set()).add(token_hash)
        while len(self._entries) > self.max_entries:
            oldest, entry = self._entries.popitem(last=False)
            self._forget(oldest, entry.account.id)

    def revoke(self, account_id: int) -> None:
        self._epochs[account_id] = self._epochs.get(account_id, 0) + 1
        for token_hash in self._by_account.pop(account_id, ()):
            self._entries.pop(token_hash, None)

    def _drop(self, token_hash: bytes, entry: _Verified) -> None:
        del self._entries[token_hash]
        self._forget(token_hash, entry.account.id)

    def _forget(self, token_hash: bytes, account_id: int) -> None:
        hashes = self._by_account.get(account_id)
        if hashes is not None:
            hashes.discard(token_hash)
            if not hashes:
                del self._by_account[account_id]
