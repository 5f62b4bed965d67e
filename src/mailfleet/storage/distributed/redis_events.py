"""The ``EventBus`` role on Redis pub/sub: wake-ups and revocations between
every process of the fleet.

Redis rather than NATS core subjects because a revocation must be handled in
every process before ``publish_revoked`` returns (a logout answered by one
``api`` process, then the old token tried on another, must fail there), and
Redis tells the publisher how many processes that is: ``PUBLISH`` answers
the number of subscribers the message was handed to, at that instant, by the
server that holds the subscriptions. Each of them handles the revocation and
then acknowledges it on the publisher's own channel; the publisher waits for
exactly that many acknowledgements. NATS core gives no such count: the same
guarantee there needs a membership protocol of its own (decision 0014).

Channels: ``<prefix>:wake`` (``"<bus> <account>:<head> ..."``),
``<prefix>:revoke`` (``"<bus> <token> <account> ..."``) and
``<prefix>:ack:<bus>``. A process hears its own wake-ups and revocations at
once, in process, and skips them on the channel. A wake-up is a hint: one
lost while a connection is re-established only delays a reader until the next
one or its slow poll of the change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import redis.exceptions
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub

from mailfleet.storage.distributed.redis_cache import parse_redis_url
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.watchers import Watchers

log = logging.getLogger("mailfleet.events")

# How long a revocation waits for every process to acknowledge it. A process
# stuck longer is told nothing more: its cache entries expire by age.
REVOKE_PATIENCE = 2.0
# Pause before the subscription is made again after its connection failed.
RESUBSCRIBE_PAUSE = 0.5


class _Acks:
    """A revocation in flight: acknowledgements heard, and how many to wait for
    once ``PUBLISH`` has said (acks may arrive before its answer does)."""

    def __init__(self) -> None:
        self.heard = 0
        self.needed: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.needed is not None and self.heard >= self.needed:
            self.done.set()


class RedisEventBus:
    def __init__(self, url: str) -> None:
        self.options = parse_redis_url(url)
        prefix = self.options.prefix
        self.bus_id = secrets.token_hex(6)
        self._wake_channel = f"{prefix}:wake"
        self._revoke_channel = f"{prefix}:revoke"
        self._ack_channel = f"{prefix}:ack:{self.bus_id}"
        self._client: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._watchers = Watchers()
        self._revoked_callbacks: list[Callable[[int], None]] = []
        self._acks: dict[str, _Acks] = {}

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendUnavailable("the Redis event bus is not open")
        return self._client

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = aioredis.Redis.from_url(
            self.options.url, socket_connect_timeout=2, socket_timeout=5
        )
        self._subscribed.clear()
        self._reader = asyncio.create_task(self._read())
        # Subscribed before open returns: from then on this process hears
        # every wake-up and revocation published.
        waiting = asyncio.ensure_future(self._subscribed.wait())
        done, _ = await asyncio.wait(
            {waiting, self._reader}, timeout=5, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting not in done:
            waiting.cancel()
            await self.close()
            raise BackendUnavailable(f"Redis at {self.options.url}: could not subscribe")

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        for pending in self._acks.values():
            pending.done.set()

    async def ping(self) -> None:
        try:
            await self._redis().ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.options.url}: {exc}") from exc
        if not self._subscribed.is_set():
            raise BackendUnavailable("the event bus is not subscribed (connection lost)")

    async def _publish(self, channel: str, message: str) -> int:
        try:
            return int(await self._redis().publish(channel, message))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis at {self.options.url}: {exc}") from exc

    # -- wake-ups ---------------------------------------------------------------

    async def publish(self, heads: Mapping[int, int]) -> None:
        if not heads:
            return
        self._watchers.deliver(heads)
        pairs = " ".join(f"{a}:{h}" for a, h in heads.items())
        await self._publish(self._wake_channel, f"{self.bus_id} {pairs}")

    def watch(self, account_id: int) -> AsyncIterator[int]:
        return self._watchers.watch(account_id)

    def on_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        self._watchers.add(account_id, callback)

    def off_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        self._watchers.remove(account_id, callback)

    # -- revocations ---------------------------------------------------------------

    async def publish_revoked(self, account_ids: Iterable[int]) -> None:
        ids = sorted(set(account_ids))
        if not ids:
            return
        for account_id in ids:
            self._revoked(account_id)
        token = secrets.token_hex(8)
        pending = self._acks[token] = _Acks()
        try:
            message = f"{self.bus_id} {token} " + " ".join(map(str, ids))
            # Our own subscription is one of the receivers: it does not ack.
            pending.needed = await self._publish(self._revoke_channel, message) - 1
            pending.check()
            try:
                await asyncio.wait_for(pending.done.wait(), REVOKE_PATIENCE)
            except TimeoutError:
                log.warning(
                    "revocation of %s acknowledged by %d of %d processes",
                    ids,
                    pending.heard,
                    pending.needed,
                )
        finally:
            del self._acks[token]

    def on_revoked(self, callback: Callable[[int], None]) -> None:
        self._revoked_callbacks.append(callback)

    def catch_up(self) -> None:
        """Nothing is left to read: a revocation is handled here before its
        publisher's ``publish_revoked`` returns (it waits for our
        acknowledgement), so a request that starts after that sees it. The
        local bus needs this read because it only waits for the datagram to
        be in our socket."""

    def _revoked(self, account_id: int) -> None:
        for callback in self._revoked_callbacks:
            callback(account_id)

    # -- the subscription -------------------------------------------------------------

    async def _read(self) -> None:
        """Keeps the subscription and handles what arrives; after a lost
        connection it subscribes again (wake-ups meanwhile are lost, which
        only delays readers; publishers of revocations see one receiver
        fewer and do not wait for us)."""
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = self._redis().pubsub()
                await pubsub.subscribe(self._wake_channel, self._revoke_channel, self._ack_channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        if message["data"] == 3:
                            self._subscribed.set()
                        continue
                    if message["type"] == "message":
                        await self._handle(message)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("event bus subscription lost: %s", exc)
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_PAUSE)

    async def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        parts = message["data"].decode().split()
        if not parts:
            return
        if channel == self._ack_channel:
            pending = self._acks.get(parts[0])
            if pending is not None:
                pending.heard += 1
                pending.check()
            return
        sender, rest = parts[0], parts[1:]
        if sender == self.bus_id:
            return  # handled in process when published
        if channel == self._wake_channel:
            heads: dict[int, int] = {}
            for pair in rest:
                account, _, head = pair.partition(":")
                with contextlib.suppress(ValueError):
                    a, h = int(account), int(head)
                    heads[a] = max(h, heads.get(a, 0))
            self._watchers.deliver(heads)
        elif channel == self._revoke_channel and rest:
            token, accounts = rest[0], rest[1:]
            for account in accounts:
                with contextlib.suppress(ValueError):
                    self._revoked(int(account))
            try:
                await self._publish(f"{self.options.prefix}:ack:{sender}", token)
            except BackendUnavailable as exc:
                log.warning("revocation not acknowledged: %s", exc)
