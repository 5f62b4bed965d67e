"""Subscriptions to accounts' change logs, and what wakes them.

One ``ChangeFeed`` per process. For each account that has subscribers here it
holds one callback on the event bus (``EventBus.on_wake``, however many sockets
and polls follow the account; a callback rather than a task iterating
``EventBus.watch``, which cost some twenty objects per account that every full
garbage collection scans) and hands each wake-up's head to the subscribers; every
``poll_seconds`` it also reads the heads of those accounts from the log itself,
which is what makes a lost wake-up a delay rather than a loss. A subscriber
then reads the log after its own cursor: the bus is never the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable

from mailfleet.realtime.events import Event, change_event, reset_event
from mailfleet.storage.interfaces import EventBus, MailboxStore

log = logging.getLogger("mailfleet.realtime")

# Changes read from the log at once: what a subscriber holds in memory at most.
PAGE_SIZE = 200
# How long an account is still watched after its last subscriber left. A long
# poll ends with every answer and comes back at once: it finds its account's
# entry still there instead of making it again.
WATCH_LINGER_SECONDS = 30.0


class _Listener:
    """A subscriber as the feed sees it: the newest head it has been told of,
    and the future it sleeps on."""

    __slots__ = ("head", "revoked", "waiter")

    def __init__(self, head: int) -> None:
        self.head = head
        self.waiter: asyncio.Future[None] | None = None
        # The account's sessions changed (log out, new password, disabled):
        # the subscriber checks its token again.
        self.revoked = False

    def offer(self, head: int) -> None:
        if head > self.head:
            self.head = head
            self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Account:
    __slots__ = ("listeners", "unwatch")

    def __init__(self) -> None:
        self.listeners: set[_Listener] = set()
        # When the last listener left: the watch lingers this long for the
        # next (a long poll comes back right after each answer).
        self.unwatch: asyncio.TimerHandle | None = None

    def offer(self, head: int) -> None:
        for listener in self.listeners:
            listener.offer(head)


class ChangeFeed:
    def __init__(self, mailbox: MailboxStore, events: EventBus, *, poll_seconds: float) -> None:
        self.mailbox = mailbox
        self.events = events
        self.poll_seconds = poll_seconds
        self.closed = False
        self._accounts: dict[int, _Account] = {}
        self._poller: asyncio.Task[None] | None = None
        events.on_revoked(self._revoked)

    @contextlib.asynccontextmanager
    async def subscribe(self, account_id: int, cursor: int | None) -> AsyncIterator[Subscription]:
        """Follows the account from ``cursor`` (``None``: from its current
        head, nothing replayed)."""
        listener = _Listener(0)
        # The bus callback is in place before the log is first read: a commit
        # after that read wakes us (the poll covers a bus that is slower).
        self._join(account_id, listener)
        try:
            if cursor is None:
                cursor = await self.mailbox.head(account_id)
            listener.head = cursor
            yield Subscription(self, account_id, cursor, listener)
        finally:
            self._leave(account_id, listener)

    def watched(self) -> dict[int, int]:
        """Subscribers per account followed in this process (for metrics)."""
        return {a: len(e.listeners) for a, e in self._accounts.items() if e.listeners}

    async def close(self) -> None:
        """Wakes every subscriber to finish (server shutdown) and stops watching."""
        self.closed = True
        for account_id, entry in self._accounts.items():
            self.events.off_wake(account_id, entry.offer)
            if entry.unwatch is not None:
                entry.unwatch.cancel()
            for listener in entry.listeners:
                listener.wake()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    def _join(self, account_id: int, listener: _Listener) -> None:
        entry = self._accounts.get(account_id)
        if entry is None:
            entry = self._accounts[account_id] = _Account()
            self.events.on_wake(account_id, entry.offer)
        elif entry.unwatch is not None:
            entry.unwatch.cancel()
            entry.unwatch = None
        entry.listeners.add(listener)
        if self._poller is None and not self.closed:
            self._poller = asyncio.create_task(self._poll())

    def _leave(self, account_id: int, listener: _Listener) -> None:
        entry = self._accounts.get(account_id)
        if entry is None:
            return
        entry.listeners.discard(listener)
        if not entry.listeners and entry.unwatch is None:
            entry.unwatch = asyncio.get_running_loop().call_later(
                WATCH_LINGER_SECONDS, self._unwatch, account_id, entry
            )

    def _unwatch(self, account_id: int, entry: _Account) -> None:
        entry.unwatch = None
        if entry.listeners or self._accounts.get(account_id) is not entry:
            return
        del self._accounts[account_id]
        self.events.off_wake(account_id, entry.offer)

    def _revoked(self, account_id: int) -> None:
        entry = self._accounts.get(account_id)
        for listener in entry.listeners if entry is not None else ():
            listener.revoked = True
            listener.wake()

    async def _poll(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.poll_seconds)
            followed = [(a, e) for a, e in self._accounts.items() if e.listeners]
            for n, (account_id, entry) in enumerate(followed):
                if n % 50 == 49:
                    # Reads may complete without suspending (SQLite on the
                    # loop): ten thousand in a row would stall every socket.
                    await asyncio.sleep(0)
                try:
                    head = await self.mailbox.head(account_id)
                except Exception:
                    log.exception("reading the change log head of account %s failed", account_id)
                    continue
                entry.offer(head)


class Subscription:
    """One client's position in one account's change log."""

    def __init__(self, feed: ChangeFeed, account_id: int, cursor: int, listener: _Listener) -> None:
        self.feed = feed
        self.account_id = account_id
        self.cursor = cursor
        self._listener = listener

    @property
    def head(self) -> int:
        """The newest sequence number this subscription has heard of."""
        return max(self._listener.head, self.cursor)

    def pending(self) -> bool:
        """Whether a wake-up or the poll said the log holds more after the cursor."""
        return self._listener.head > self.cursor

    @property
    def closed(self) -> bool:
        return self.feed.closed

    def take_revoked(self) -> bool:
        """Whether the account's sessions changed since this was last asked
        (a revocation on the event bus): time to check the token again."""
        revoked, self._listener.revoked = self._listener.revoked, False
        return revoked

    async def read(self, limit: int = PAGE_SIZE) -> list[Event]:
        """The events after the cursor (at most ``limit``), moving the cursor
        past them; a cursor the log no longer holds gives one ``reset``."""
        page = await self.feed.mailbox.changes(self.account_id, self.cursor, limit=limit)
        self._listener.offer(page.head)
        if page.reset:
            self.cursor = page.head
            return [reset_event(page.head)]
        if page.changes:
            self.cursor = page.changes[-1].seq
        return [change_event(c) for c in page.changes]

    async def wait(self, timeout: float) -> None:
        """Until the log may hold events after the cursor, the feed closes,
        ``wake`` is called, or ``timeout`` seconds pass."""
        if self._listener.head > self.cursor or self._listener.revoked or self.feed.closed:
            return
        waiter = self._listener.waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._listener.waiter = None

    def wake(self) -> None:
        """Ends a ``wait`` early (the client went away)."""
        self._listener.wake()

    def reset(self) -> Event:
        """Gives up on what the client has not received: ``reset`` at the head."""
        self.cursor = self.head
        return reset_event(self.cursor)


async def long_poll(
    feed: ChangeFeed,
    account_id: int,
    cursor: int | None,
    timeout: float,
    *,
    session_ends: float = math.inf,
    still_authorized: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[list[Event], int]:
    """``GET /v1/events``: the events after ``cursor`` at once, or the first
    that commit within ``timeout`` seconds; and the cursor to ask from next.

    The poll ends with its session: ``SessionEnded`` at ``session_ends`` (the
    event loop's clock), or when a revocation of the account (logout, new
    password, disabled) finds ``still_authorized`` false. A revocation that
    leaves this token valid (another session's logout) is taken and the poll
    waits on: a revocation flag left set would make every wait return at once
    and the poll read the log in a loop until its timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with feed.subscribe(account_id, cursor) as subscription:
        while True:
            if loop.time() >= session_ends:
                raise SessionEnded(expired=True)
            revoked = subscription.take_revoked()
            if revoked and still_authorized is not None and not await still_authorized():
                raise SessionEnded(expired=False)
            events = await subscription.read()
            left = deadline - loop.time()
            if events or left <= 0 or feed.closed:
                return events, subscription.cursor
            await subscription.wait(min(left, max(0.0, session_ends - loop.time())))


class SessionEnded(Exception):
    """A long poll's session ended while it waited: expired, or revoked."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("session expired" if expired else "session ended")
        self.expired = expired
