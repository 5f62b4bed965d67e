"""The watchers of one process's event bus, by account: what every
``EventBus`` implementation hands a wake-up to, however it heard of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

log = logging.getLogger("mailfleet.events")


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
        self._by_account: dict[int, list[Callable[[int], None]]] = {}

    def add(self, account_id: int, callback: Callable[[int], None]) -> None:
        """``EventBus.on_wake``: ``callback(head)`` for each wake-up of the account."""
        self._by_account.setdefault(account_id, []).append(callback)

    def remove(self, account_id: int, callback: Callable[[int], None]) -> None:
        """``EventBus.off_wake``: undoes one ``add`` (an equal callback)."""
        callbacks = self._by_account.get(account_id)
        if callbacks is None or callback not in callbacks:
            return
        callbacks.remove(callback)
        if not callbacks:
            del self._by_account[account_id]

    async def watch(self, account_id: int) -> AsyncIterator[int]:
        """``EventBus.watch``: each newer head of the account, coalesced."""
        entry = _Watch()
        self.add(account_id, entry.offer)
        try:
            while True:
                await entry.event.wait()
                entry.event.clear()
                yield entry.head
        finally:
            self.remove(account_id, entry.offer)

    def deliver(self, heads: Mapping[int, int]) -> None:
        for account_id, head in heads.items():
            callbacks = self._by_account.get(account_id)
            if not callbacks:
                continue
            # A callback may add or remove watchers of the account.
            for callback in tuple(callbacks):
                try:
                    callback(head)
                except Exception:
                    log.exception("a wake-up callback of account %s failed", account_id)
