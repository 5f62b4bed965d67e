"""Durable queues on NATS JetStream 2.9: the distributed implementation of the
``Queue`` contract (``storage/interfaces.py``, decisions 0009 and 0014).

Each queue is a work-queue stream ``<prefix>_<queue>`` (file storage,
``replicas`` copies) holding one message per item on ``<prefix>.q.<queue>.<id>``
(due) or ``<prefix>.d.<queue>.<id>`` (a delayed put, not due yet). Two durable
pull consumers read it: ``items`` (the lease is its ``ack_wait``, attempts are
its delivery count) and ``delays``, whose messages a mover in every fetching
process naks until they are due and then republishes onto the item subject.
The item id is in the subject, so ``get``/``remove``/``retry_now`` address an
item by subject (last message of a subject, purge of a subject) and ``list``
walks the stream by sequence; no store on the side holds the items.

Dedupe is the stream's ``duplicate_window`` on ``Nats-Msg-Id``. A duplicate's
PubAck names only the first message's sequence, which is gone once that item
is acked, so the first put also writes its id into ``<prefix>_dedupe`` (a
stream keeping the newest message per key for a little longer than the
window): a later duplicate answers that id whether or not the item remains.

Fetches speak the pull protocol directly rather than through nats-py's
``fetch``: a lingering request for one message (it ends when that message or
the server's expiry arrives, so it never outlives the call and leases nothing
behind the caller's back), then a ``no_wait`` request for the rest of the
batch. Every publish has a timeout and is repeated with the same
``Nats-Msg-Id`` until a leader answers (a stream leader election takes a few
seconds).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from mailfleet.ids import now_ms
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.interfaces import QueueItem, QueuePolicy, QueueStats, new_queue_item_id

log = logging.getLogger("mailfleet.queue")

ERROR_QUEUE = "error"
ITEMS_CONSUMER = "items"
DELAYS_CONSUMER = "delays"

# Headers every message carries (``ENQUEUED``: first put, kept by replays,
# moves and copies; ``DUE``: when it may be delivered, as far as the stream
# knows) and those of ``error`` items.
ENQUEUED = "Mf-Enqueued"
DUE = "Mf-Due"
ORIGIN = "Mf-Origin"
REASON = "Mf-Error"
MSG_ID = "Nats-Msg-Id"

# One publish attempt waits this long for its PubAck; attempts go on, same
# Nats-Msg-Id, for PUBLISH_PATIENCE in all (a leader election took ~3 s in
# the field notes), then the put fails with BackendUnavailable. The queue URL's
# ``publish_patience`` changes it: shorter answers "try later" sooner when
# the cluster is down, at the price of 503s through a slow election.
PUBLISH_TIMEOUT = 2.0
PUBLISH_PATIENCE = 20.0
API_TIMEOUT = 5.0
# How long ``open`` keeps asking for its streams and consumers.
OPEN_PATIENCE = 30.0
# A fetch waits this long past its request's expiry for the server's answer
# before giving the request up (a lost connection).
FETCH_MARGIN = 2.0
# How long the mover's pull for delayed items lingers, and how long a
# duplicate put waits for the first put to record its id.
DELAY_POLL_SECONDS = 5.0
DEDUPE_LOOKUP_PATIENCE = 2.0
# The dedupe index keeps a key this much longer than the longest window:
# longer does no harm (a put after the window records the new id).
DEDUPE_INDEX_SLACK_SECONDS = 60.0
# Items leased at once; a retried item waits out its delay as a pending
# delivery, and outgoing mail may wait for days.
MAX_ACK_PENDING = 1_000_000

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class NatsQueueOptions:
    """What ``nats://host:port[,host:port...]/?prefix=P&replicas=N`` names."""

    servers: tuple[str, ...]
    prefix: str = "mailfleet"
    replicas: int = 1
    publish_patience: float = PUBLISH_PATIENCE


def parse_nats_queue_url(url: str) -> NatsQueueOptions:
    """``nats://h1:4222,h2:4222/?prefix=mailfleet&replicas=3&publish_patience=20``:
    every server of the cluster (the client fails over between them), the
    prefix of the stream names and subjects, the copies each stream keeps, and
    how many seconds a put keeps trying before it is BackendUnavailable (an
    SMTP client waits that long for its 451 while no server answers)."""
    parts = urlsplit(url)
    if parts.scheme != "nats" or not parts.netloc:
        raise ValueError(f"expected nats://HOST:PORT[,HOST:PORT...]/?prefix=..., got {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    prefix = query.get("prefix", "mailfleet")
    if not _NAME.match(prefix):
        raise ValueError(f"queue prefix {prefix!r}: letters, digits, '_' and '-' only")
    replicas = int(query.get("replicas", "1"))
    if not 1 <= replicas <= 5:
        raise ValueError(f"replicas={replicas}: JetStream keeps 1 to 5 copies")
    patience = float(query.get("publish_patience", PUBLISH_PATIENCE))
    if not PUBLISH_TIMEOUT <= patience <= 300:
        raise ValueError(f"publish_patience={patience}: {PUBLISH_TIMEOUT:g} to 300 seconds")
    servers = tuple(f"nats://{hostport}" for hostport in parts.netloc.split(","))
    return NatsQueueOptions(servers, prefix, replicas, patience)


class _Delivered:
    """The JetStream message behind a fetched item: its ack goes to it."""

    __slots__ = ("msg", "seq")

    def __init__(self, msg: Msg, seq: int) -> None:
        self.msg = msg
        self.seq = seq


class NatsQueue:
    def __init__(
        self,
        url: str,
        policies: Mapping[str, QueuePolicy] | None = None,
        *,
        default_policy: QueuePolicy | None = None,
    ) -> None:
        self.options = parse_nats_queue_url(url)
        self._prefix = self.options.prefix
        self._policies = dict(policies or {})
        self._default_policy = default_policy or QueuePolicy()
        self._nc: Client | None = None
        self._ready: set[str] = set()
        self._ready_lock = asyncio.Lock()
        self._movers: dict[str, asyncio.Task[None]] = {}
        # (queue, id) -> the delivery an ack, retry or dead letter answers.
        self._delivered: dict[tuple[str, str], _Delivered] = {}

    # -- names -----------------------------------------------------------------

    def stream_name(self, queue: str) -> str:
        return f"{self._prefix}_{queue}"

    @property
    def dedupe_stream(self) -> str:
        return f"{self._prefix}_dedupe"

    def _subject(self, kind: str, queue: str, item_id: str) -> str:
        return f"{self._prefix}.{kind}.{queue}.{item_id}"

    def policy(self, queue: str) -> QueuePolicy:
        return self._policies.get(queue, self._default_policy)

    # -- connection and streams ------------------------------------------------

    async def open(self) -> None:
        if self._nc is not None:
            return
        try:
            self._nc = await nats.connect(
                servers=list(self.options.servers),
                connect_timeout=2,
                reconnect_time_wait=0.25,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
            )
        except (OSError, nats.errors.Error) as exc:
            raise BackendUnavailable(f"NATS at {', '.join(self.options.servers)}: {exc}") from exc
        # A cluster busy electing leaders, or creating the same replicated
        # streams for several processes starting at once, can leave one API
        # request unanswered for API_TIMEOUT (seen in CI on three nodes); the
        # requests are idempotent, so a starting process asks again.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_PATIENCE
        while True:
            try:
                await self._ensure_dedupe_stream()
                for queue in {*self._policies, ERROR_QUEUE}:
                    await self._ensure(queue)
                return
            except BackendUnavailable:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _stop_movers(self) -> None:
        movers, self._movers = list(self._movers.values()), {}
        for task in movers:
            task.cancel()
        for task in movers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self._stop_movers()
        nc, self._nc = self._nc, None
        self._ready.clear()
        self._delivered.clear()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def ping(self) -> None:
        await self._api("$JS.API.INFO", {})

    def _client(self) -> Client:
        if self._nc is None:
            raise BackendUnavailable("the NATS queue is not open")
        return self._nc

    async def _api(self, subject: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """One JetStream API request; its ``error`` answer raised as
        ``nats.js.errors.APIError`` (404s as ``NotFoundError``)."""
        try:
            reply = await self._client().request(
                subject, json.dumps(request).encode(), timeout=API_TIMEOUT
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BackendUnavailable(f"JetStream did not answer {subject}: {exc!r}") from exc
        except nats.errors.ConnectionClosedError as exc:
            raise BackendUnavailable(f"NATS connection closed: {exc}") from exc
        answer: dict[str, Any] = json.loads(reply.data)
        error = answer.get("error")
        if error:
            raise nats.js.errors.APIError.from_error(error)
        return answer

    async def _ensure_dedupe_stream(self) -> None:
        windows = [
            p.dedupe_window_seconds for p in (*self._policies.values(), self._default_policy)
        ]
        keep = max(windows) + DEDUPE_INDEX_SLACK_SECONDS
        await self._put_stream(
            StreamConfig(
                name=self.dedupe_stream,
                subjects=[f"{self._prefix}.k.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=self.options.replicas,
                max_msgs_per_subject=1,
                max_age=keep,
                duplicate_window=min(keep, 120.0),
            )
        )

    async def _ensure(self, queue: str) -> None:
        """The queue's stream and its two consumers, created on first use and
        brought to the queue's policy when they exist with another one."""
        if queue in self._ready:
            return
        if not _NAME.match(queue):
            raise ValueError(f"queue name {queue!r}: letters, digits, '_' and '-' only")
        async with self._ready_lock:
            if queue in self._ready:
                return
            policy = self.policy(queue)
            stream = self.stream_name(queue)
            await self._put_stream(
                StreamConfig(
                    name=stream,
                    subjects=[
                        self._subject("q", queue, "*"),
                        self._subject("d", queue, "*"),
                    ],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    discard=DiscardPolicy.OLD,
                    num_replicas=self.options.replicas,
                    duplicate_window=policy.dedupe_window_seconds,
                )
            )
            for durable, kind, ack_wait in (
                (ITEMS_CONSUMER, "q", policy.lease_seconds),
                (DELAYS_CONSUMER, "d", 30.0),
            ):
                config = ConsumerConfig(
                    durable_name=durable,
                    filter_subject=self._subject(kind, queue, "*"),
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=-1,
                    max_ack_pending=MAX_ACK_PENDING,
                    num_replicas=0,
                )
                await self._api(
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                    {"stream_name": stream, "config": config.as_dict()},
                )
            self._ready.add(queue)

    async def _put_stream(self, config: StreamConfig) -> None:
        assert config.name is not None
        body = config.as_dict()
        try:
            await self._api(f"$JS.API.STREAM.CREATE.{config.name}", body)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # stream name already in use (other config)
                raise
            await self._api(f"$JS.API.STREAM.UPDATE.{config.name}", body)

    # -- publishing ----------------------------------------------------------------

    async def _publish(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bool]:
        """Publishes until a stream leader acknowledges it; the same
        ``Nats-Msg-Id`` on every attempt makes a repeat after a lost PubAck a
        duplicate instead of a second item. Returns (sequence, duplicate)."""
        nc = self._client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.publish_patience
        pause = 0.05
        while True:
            try:
                reply = await nc.request(subject, body, timeout=PUBLISH_TIMEOUT, headers=headers)
                answer = json.loads(reply.data)
                error = answer.get("error")
                if error is None:
                    return int(answer["seq"]), bool(answer.get("duplicate"))
                # 503: JetStream has no leader for the stream right now.
                if error.get("code") != 503:
                    raise nats.js.errors.APIError.from_error(error)
                problem = f"JetStream: {error.get('description')}"
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                problem = repr(exc)
            except nats.errors.ConnectionClosedError as exc:
                raise BackendUnavailable(f"NATS connection closed: {exc}") from exc
            if loop.time() + pause > deadline:
                raise BackendUnavailable(f"publish to {subject} not acknowledged: {problem}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _stored(self, stream: str, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """One message of a stream (``seq``, ``last_by_subj`` or
        ``next_by_subj``) from the stream leader, or None."""
        try:
            answer = await self._api(f"$JS.API.STREAM.MSG.GET.{stream}", request)
        except nats.js.errors.NotFoundError:
            return None
        message: dict[str, Any] = answer["message"]
        return message

    # -- the contract --------------------------------------------------------------

    async def put(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        delay_seconds: float = 0,
    ) -> str:
        await self._ensure(queue)
        now = now_ms()
        item_id = new_queue_item_id(now)
        due = now + int(delay_seconds * 1000)
        kind = "d" if delay_seconds > 0 else "q"
        headers = {ENQUEUED: str(now), DUE: str(due)}
        headers[MSG_ID] = f"k:{dedupe_key}" if dedupe_key is not None else f"i:{item_id}"
        body = json.dumps(payload).encode()
        seq, duplicate = await self._publish(self._subject(kind, queue, item_id), body, headers)
        if dedupe_key is None:
            return item_id
        index = self._subject("k", queue, hashlib.sha256(dedupe_key.encode()).hexdigest())
        if not duplicate:
            await self._publish(index, item_id.encode(), {MSG_ID: f"x:{queue}:{item_id}"})
            return item_id
        return await self._first_id(queue, index, seq)

    async def _first_id(self, queue: str, index: str, seq: int) -> str:
        """The id of the put a duplicate repeated: its index entry, or the
        item itself while it is still on the stream. The first put records
        its id right after its publish; a duplicate racing it waits for that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEDUPE_LOOKUP_PATIENCE
        while True:
            entry = await self._stored(self.dedupe_stream, {"last_by_subj": index})
            if entry is not None:
                return _decode(entry.get("data")).decode()
            first = await self._stored(self.stream_name(queue), {"seq": seq})
            if first is not None:
                return str(first["subject"]).rsplit(".", 1)[1]
            if loop.time() > deadline:
                # The first put's process stopped between its publish and its
                # index entry, and its item is already gone: the put it repeats
                # was stored and done, only its id is lost.
                log.warning("queue %s: duplicate of sequence %d, whose id is lost", queue, seq)
                return f"seq{seq}"
            await asyncio.sleep(0.05)

    async def fetch(self, queue: str, *, limit: int, timeout: float) -> list[QueueItem]:
        await self._ensure(queue)
        self._start_mover(queue)
        policy = self.policy(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msgs = await self._pull(queue, ITEMS_CONSUMER, limit, deadline - loop.time())
            taken: list[QueueItem] = []
            spent = False
            lease_until = now_ms() + int(policy.lease_seconds * 1000)
            for msg in msgs:
                item, delivered = _fetched(queue, msg, lease_until)
                if item.attempts > policy.max_deliveries:
                    spent = True
                    await self._to_error(
                        item,
                        delivered,
                        f"gave up after {item.attempts - 1} deliveries (last lease expired)",
                    )
                    continue
                self._delivered[(queue, item.id)] = delivered
                taken.append(item)
            if taken or not spent or loop.time() >= deadline:
                return taken

    async def _pull(self, queue: str, consumer: str, limit: int, wait: float) -> list[Msg]:
        """Up to ``limit`` messages the consumer has for us now, or, when it
        has none, the first to arrive within ``wait`` seconds and what else
        is there by then."""
        msgs = await self._request_batch(queue, consumer, limit, None)
        if msgs or wait <= 0:
            return msgs
        first = await self._request_batch(queue, consumer, 1, wait)
        if not first or limit == 1:
            return first
        return first + await self._request_batch(queue, consumer, limit - 1, None)

    async def _request_batch(
        self, queue: str, consumer: str, batch: int, expires: float | None
    ) -> list[Msg]:
        """One pull request: ``no_wait`` when ``expires`` is None, else a
        request lingering that long. Collects until the batch is full or the
        server ends the request with a status (404 nothing, 408 expired).
        Each request has a subscription of its own: JetStream delivers under
        the stream's subject, so only the subscription tells whose it is."""
        nc = self._client()
        inbox = nc.new_inbox()
        request: dict[str, Any] = {"batch": batch}
        if expires is None:
            request["no_wait"] = True
        else:
            request["expires"] = max(1_000_000, int(expires * 1e9))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (expires or 0) + FETCH_MARGIN
        msgs: list[Msg] = []
        try:
            sub = await nc.subscribe(inbox)
        except nats.errors.ConnectionClosedError as exc:
            raise BackendUnavailable(f"NATS connection closed: {exc}") from exc
        try:
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream_name(queue)}.{consumer}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            while len(msgs) < batch:
                left = give_up - loop.time()
                if left <= 0:
                    raise BackendUnavailable(f"JetStream did not answer a fetch on {queue}")
                try:
                    msg = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    continue
                status = msg.headers.get("Status") if msg.headers else None
                if status is None:
                    msgs.append(msg)
                elif status in ("404", "408"):
                    break
                elif status != "100":  # 100: an idle heartbeat
                    raise BackendUnavailable(f"JetStream fetch on {queue}: {status} {msg.headers}")
        except BaseException:
            # What we were given and will not return comes back at once.
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak()
            raise
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return msgs

    # -- delayed puts ------------------------------------------------------------------

    def _start_mover(self, queue: str) -> None:
        task = self._movers.get(queue)
        if task is None or task.done():
            self._movers[queue] = asyncio.create_task(self._move_delayed(queue))

    async def _move_delayed(self, queue: str) -> None:
        """Naks each delayed item until it is due, then publishes it onto
        the item subject (same id and headers; the Nats-Msg-Id makes a move
        repeated by another process a duplicate) and acks the delayed one."""
        while self._nc is not None:
            try:
                msgs = await self._pull(queue, DELAYS_CONSUMER, 64, DELAY_POLL_SECONDS)
                for msg in msgs:
                    headers = dict(msg.headers or {})
                    due = int(headers.get(DUE, "0"))
                    left = due - now_ms()
                    if left > 0:
                        await msg.nak(delay=left / 1000)
                        continue
                    item_id = msg.subject.rsplit(".", 1)[1]
                    headers[MSG_ID] = f"m:{item_id}"
                    await self._publish(self._subject("q", queue, item_id), msg.data, headers)
                    await msg.ack_sync(timeout=API_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a backend down: try again, never die
                log.warning("queue %s: moving delayed items: %r", queue, exc)
                await asyncio.sleep(1)

    # -- acks and failures --------------------------------------------------------------

    async def ack(self, item: QueueItem) -> None:
        delivered = self._delivered.pop((item.queue, item.id), None)
        if delivered is None:
            await self.remove(item.queue, item.id)
            return
        await self._ack(delivered)

    async def _ack(self, delivered: _Delivered) -> None:
        try:
            await delivered.msg.ack_sync(timeout=API_TIMEOUT)
        except nats.errors.TimeoutError as exc:
            raise BackendUnavailable(f"ack not confirmed: {exc!r}") from exc

    async def ack_many(self, items: Sequence[QueueItem]) -> None:
        await asyncio.gather(*(self.ack(item) for item in items))

    async def retry(self, item: QueueItem, *, delay_seconds: float) -> None:
        if item.attempts >= self.policy(item.queue).max_deliveries:
            await self.dead_letter(
                item, error=f"gave up after {item.attempts} deliveries (last retried)"
            )
            return
        delivered = self._delivered.pop((item.queue, item.id), None)
        if delivered is None:
            return  # not leased here: it is delivered again when its lease ends
        await delivered.msg.nak(delay=delay_seconds if delay_seconds > 0 else None)
        await self._client().flush(timeout=int(API_TIMEOUT))

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        delivered = self._delivered.pop((item.queue, item.id), None)
        await self._to_error(item, delivered, error)

    async def _to_error(self, item: QueueItem, delivered: _Delivered | None, error: str) -> None:
        """Publishes the item onto ``error`` with its reason and origin, then
        takes it off its queue: a crash between the two leaves it on both,
        never on neither."""
        await self._ensure(ERROR_QUEUE)
        now = now_ms()
        attempt = delivered.seq if delivered is not None else now
        headers = {
            ENQUEUED: str(item.enqueued_at),
            DUE: str(now),
            ORIGIN: item.queue,
            REASON: json.dumps(error),
            MSG_ID: f"e:{item.queue}:{item.id}:{attempt}",
        }
        await self._publish(
            self._subject("q", ERROR_QUEUE, item.id), json.dumps(item.payload).encode(), headers
        )
        if delivered is not None:
            await self._ack(delivered)
        else:
            await self.remove(item.queue, item.id)

    # -- looking at queues ----------------------------------------------------------

    async def retry_now(self, queue: str, item_id: str) -> str | None:
        await self._ensure(queue)
        message = await self._stored(
            self.stream_name(queue), {"last_by_subj": self._subject("*", queue, item_id)}
        )
        if message is None:
            return None
        headers = _headers(message)
        copy_id = new_queue_item_id(now_ms())
        headers[DUE] = str(now_ms())
        headers[MSG_ID] = f"i:{copy_id}"
        await self._publish(
            self._subject("q", queue, copy_id), _decode(message.get("data")), headers
        )
        await self.remove(queue, item_id)
        return copy_id

    async def list(self, queue: str, *, limit: int = 100) -> list[QueueItem]:
        await self._ensure(queue)
        stream = self.stream_name(queue)
        everything = self._subject("*", queue, "*")
        found: list[QueueItem] = []
        seq = 1
        while len(found) < limit:
            message = await self._stored(stream, {"seq": seq, "next_by_subj": everything})
            if message is None:
                break
            found.append(_waiting_item(queue, message))
            seq = int(message["seq"]) + 1
        return found

    async def get(self, queue: str, item_id: str) -> QueueItem | None:
        await self._ensure(queue)
        message = await self._stored(
            self.stream_name(queue), {"last_by_subj": self._subject("*", queue, item_id)}
        )
        return _waiting_item(queue, message) if message is not None else None

    async def replay(self, item_id: str) -> bool:
        if not _NAME.match(item_id):
            return False
        await self._ensure(ERROR_QUEUE)
        error_stream = self.stream_name(ERROR_QUEUE)
        message = await self._stored(
            error_stream, {"last_by_subj": self._subject("q", ERROR_QUEUE, item_id)}
        )
        if message is None:
            return False
        headers = _headers(message)
        origin = headers.pop(ORIGIN, "")
        if not origin:
            return False
        await self._ensure(origin)
        headers.pop(REASON, None)
        headers[DUE] = str(now_ms())
        # Never deduped against the first put: a Msg-Id of this replay only,
        # so that repeating this publish stores it once.
        headers[MSG_ID] = f"r:{item_id}:{message['seq']}"
        await self._publish(
            self._subject("q", origin, item_id), _decode(message.get("data")), headers
        )
        await self._api(f"$JS.API.STREAM.MSG.DELETE.{error_stream}", {"seq": message["seq"]})
        return True

    async def remove(self, queue: str, item_id: str) -> bool:
        await self._ensure(queue)
        self._delivered.pop((queue, item_id), None)
        if not _NAME.match(item_id):
            return False
        answer = await self._api(
            f"$JS.API.STREAM.PURGE.{self.stream_name(queue)}",
            {"filter": self._subject("*", queue, item_id)},
        )
        return int(answer.get("purged", 0)) > 0

    async def purge(self, queue: str) -> int:
        await self._ensure(queue)
        self._delivered = {k: v for k, v in self._delivered.items() if k[0] != queue}
        answer = await self._api(f"$JS.API.STREAM.PURGE.{self.stream_name(queue)}", {})
        return int(answer.get("purged", 0))

    async def stats(self, queue: str) -> QueueStats:
        await self._ensure(queue)
        stream = self.stream_name(queue)
        info = await self._api(f"$JS.API.STREAM.INFO.{stream}", {})
        state = info["state"]
        depth = int(state["messages"])
        if depth == 0:
            return QueueStats(depth=0, oldest_age_seconds=0.0)
        first = await self._stored(
            stream, {"seq": int(state["first_seq"]), "next_by_subj": self._subject("*", queue, "*")}
        )
        if first is None:  # emptied meanwhile
            return QueueStats(depth=0, oldest_age_seconds=0.0)
        enqueued = int(_headers(first).get(ENQUEUED, now_ms()))
        return QueueStats(depth=depth, oldest_age_seconds=max(0.0, (now_ms() - enqueued) / 1000))

    # -- for tests and operators ------------------------------------------------------

    async def delete_streams(self) -> None:
        """Deletes every stream of this prefix (tests clean up with it)."""
        await self._stop_movers()
        answer = await self._api("$JS.API.STREAM.NAMES", {"subject": f"{self._prefix}.>"})
        for name in answer.get("streams") or []:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._api(f"$JS.API.STREAM.DELETE.{name}", {})
        self._ready.clear()


def _decode(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def _headers(message: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a stored message (``STREAM.MSG.GET`` gives them as a
    base64 block: a ``NATS/1.0`` line, then ``Name: value`` lines)."""
    raw = _decode(message.get("hdrs")).decode()
    headers: dict[str, str] = {}
    for line in raw.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


def _waiting_item(queue: str, message: Mapping[str, Any]) -> QueueItem:
    """An item as the stream holds it: no delivery state (``attempts`` 0)."""
    headers = _headers(message)
    return QueueItem(
        queue=queue,
        id=str(message["subject"]).rsplit(".", 1)[1],
        payload=json.loads(_decode(message.get("data"))),
        attempts=0,
        enqueued_at=int(headers.get(ENQUEUED, "0")),
        not_before=int(headers.get(DUE, "0")),
        last_error=json.loads(headers[REASON]) if REASON in headers else "",
        origin=headers.get(ORIGIN, ""),
    )


def _fetched(queue: str, msg: Msg, lease_until: int) -> tuple[QueueItem, _Delivered]:
    headers = msg.headers or {}
    metadata = msg.metadata
    item = QueueItem(
        queue=queue,
        id=msg.subject.rsplit(".", 1)[1],
        payload=json.loads(msg.data),
        attempts=metadata.num_delivered or 1,
        enqueued_at=int(headers.get(ENQUEUED, "0")),
        not_before=lease_until,
    )
    return item, _Delivered(msg, metadata.sequence.stream if metadata.sequence else 0)
