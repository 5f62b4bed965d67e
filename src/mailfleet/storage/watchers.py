"""The watchers of one process's event bus, by account: what every
``EventBus`` implementation hands a wake-up to, however it heard of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping


class _Watch:
    """One watcher: the newest head not yet read, and a wake-up flag."""

    def __init__(self) -> None:
        self.head = 0
        self.event = asyncio.Event()

    def offer(self, head: int) -> None:
        if head > self.head:
            self.head = head
            self.event.set()


class Watchers:
    def __init__(self) -> None:
        self._by_account: dict[int, set[_Watch]] = {}

    async def watch(self, account_id: int) -> AsyncIterator[int]:
        """``EventBus.watch``: each newer head of the account, coalesced."""
        entry = _Watch()
        self._by_account.setdefault(account_id, set()).add(entry)
        try:
            while True:
                await entry.event.wait()
                entry.event.clear()
                yield entry.head
        finally:
            watches = self._by_account.get(account_id)
            if watches is not None:
                watches.discard(entry)
                if not watches:
                    del self._by_account[account_id]

    def deliver(self, heads: Mapping[int, int]) -> None:
        for account_id, head in heads.items():
            for entry in self._by_account.get(account_id, ()):
                entry.offer(head)
