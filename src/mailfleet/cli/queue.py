"""``mailfleet queue list|show|retry|remove|purge QUEUE``: inspect and replay
the work queues (``incoming``, ``outgoing``, ``error``).

A live item carries no reason (a JetStream nak cannot, decision 0009): for
``outgoing`` the reason and the next try of each recipient are on the Sent
copy's delivery rows, which ``list`` and ``show`` print beside the item; items
on ``error`` carry the reason they failed with."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailfleet.config import Settings
from mailfleet.errors import NotFound
from mailfleet.storage.factory import create_stores
from mailfleet.storage.interfaces import Delivery, MailboxStore, QueueItem

QUEUES = ("incoming", "outgoing", "error")


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("queue", help="inspect and replay work queues")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="items waiting on a queue")
    listing.add_argument("queue", choices=QUEUES)
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="one item in full")
    show.add_argument("queue", choices=QUEUES)
    show.add_argument("item_id")
    show.set_defaults(handler=_show)
    retry = sub.add_parser(
        "retry",
        help="put an error item back on its queue, or make an item due now (under a new id)",
    )
    retry.add_argument("queue", choices=QUEUES)
    retry.add_argument("item_id")
    retry.set_defaults(handler=_retry)
    remove = sub.add_parser("remove", help="drop one item (cancels an outgoing delivery)")
    remove.add_argument("queue", choices=QUEUES)
    remove.add_argument("item_id")
    remove.set_defaults(handler=_remove)
    purge = sub.add_parser("purge", help="drop every item of a queue")
    purge.add_argument("queue", choices=QUEUES)
    purge.add_argument("--yes", action="store_true", help="really")
    purge.set_defaults(handler=_purge)
    for parser in (listing, show, retry, remove, purge):
        common(parser)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(item: QueueItem, deliveries: list[Delivery]) -> str:
    summary = {k: item.payload[k] for k in ("domain", "recipients") if k in item.payload}
    parts = [
        item.id,
        f"attempts={item.attempts}",
        f"enqueued={_when(item.enqueued_at)}",
        f"next={_when(item.not_before)}",
    ]
    if item.origin:
        parts.append(f"from={item.origin}")
    parts.append(json.dumps(summary, ensure_ascii=False))
    for d in deliveries:
        if d.status in ("queued", "deferred"):
            parts.append(f"{d.email}: {d.status}" + (f" {d.detail!r}" if d.detail else ""))
    if item.last_error:
        parts.append(f"error={item.last_error!r}")
    return "  ".join(parts)


async def _with_queue(settings: Settings, action: Callable[[Any], Any]) -> Any:
    stores = create_stores(settings)
    await stores.queue.open()
    try:
        return await action(stores.queue)
    finally:
        await stores.queue.close()


async def _item_deliveries(store: MailboxStore | None, item: QueueItem) -> list[Delivery]:
    """Where the recipients of an ``outgoing`` item stand on the Sent copy
    (reason and next try of each); nothing for other items."""
    if store is None or item.queue != "outgoing":
        return []
    try:
        account_id, message_id = int(item.payload["account_id"]), int(item.payload["message_id"])
    except (KeyError, TypeError, ValueError):
        return []
    names = set(item.payload.get("recipients", ()))
    return [d for d in await store.get_deliveries(account_id, message_id) if d.email in names]


async def _with_stores(
    settings: Settings, queue: str, action: Callable[[Any, MailboxStore | None], Any]
) -> Any:
    """The queue, and the metadata store when ``queue`` is ``outgoing``."""
    if queue != "outgoing":
        return await _with_queue(settings, lambda q: action(q, None))
    stores = create_stores(settings)
    await stores.open()
    try:
        return await action(stores.queue, stores.mailbox)
    finally:
        await stores.close()


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def run(queue: Any, store: MailboxStore | None) -> None:
        stats = await queue.stats(args.queue)
        print(f"{args.queue}: {stats.depth} items, oldest {stats.oldest_age_seconds:.0f} s")
        for item in await queue.list(args.queue, limit=args.limit):
            print(_line(item, await _item_deliveries(store, item)))

    await _with_stores(settings, args.queue, run)
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def run(
        queue: Any, store: MailboxStore | None
    ) -> tuple[QueueItem, list[Delivery]] | None:
        item: QueueItem | None = await queue.get(args.queue, args.item_id)
        if item is None:
            return None
        return item, await _item_deliveries(store, item)

    found = await _with_stores(settings, args.queue, run)
    if found is None:
        raise NotFound(f"no item {args.item_id} on {args.queue}")
    item, deliveries = found
    shown: dict[str, Any] = {
        "queue": item.queue,
        "id": item.id,
        "attempts": item.attempts,
        "enqueued_at": _when(item.enqueued_at),
        "next_attempt_at": _when(item.not_before),
        "origin": item.origin or None,
        "last_error": item.last_error or None,
        "payload": item.payload,
    }
    if item.queue == "outgoing":
        shown["delivery"] = [
            {
                "email": d.email,
                "status": d.status,
                "detail": d.detail or None,
                "next_attempt_at": _when(d.next_attempt_at) if d.next_attempt_at else None,
            }
            for d in deliveries
        ]
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


async def _retry(args: argparse.Namespace, settings: Settings) -> int:
    """An ``error`` item goes back on its queue with its id; an item waiting
    on ``incoming`` or ``outgoing`` is put again, due now, under a new id
    (``Queue.retry_now``: a JetStream message cannot be made due in place)."""

    async def run(queue: Any) -> str | None:
        if args.queue == "error":
            return args.item_id if await queue.replay(args.item_id) else None
        again: str | None = await queue.retry_now(args.queue, args.item_id)
        return again

    item_id = await _with_queue(settings, run)
    if item_id is None:
        raise NotFound(f"no item {args.item_id} on {args.queue}")
    if item_id == args.item_id:
        print(f"{args.item_id} is due now")
    else:
        print(f"{args.item_id} is due now as {item_id}")
    return 0


async def _remove(args: argparse.Namespace, settings: Settings) -> int:
    stores = create_stores(settings)
    await stores.open()
    try:
        item = await stores.queue.get(args.queue, args.item_id)
        if item is None or not await stores.queue.remove(args.queue, args.item_id):
            raise NotFound(f"no item {args.item_id} on {args.queue}")
        if args.queue == "outgoing":
            await _cancel_delivery(stores.mailbox, item)
    finally:
        await stores.close()
    print(f"removed {args.item_id} from {args.queue}")
    return 0


async def _cancel_delivery(store: MailboxStore, item: QueueItem) -> None:
    """The sender's Sent copy says which recipients will never get it."""
    account_id, message_id = int(item.payload["account_id"]), int(item.payload["message_id"])
    await store.set_deliveries(
        account_id,
        message_id,
        [
            Delivery(d.email, "bounced", "cancelled by an administrator")
            for d in await store.get_deliveries(account_id, message_id)
            if d.email in item.payload["recipients"] and d.status in ("queued", "deferred")
        ],
    )


async def _purge(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        print(f"this drops every item on {args.queue}; add --yes to do it")
        return 1

    async def run(queue: Any) -> int:
        return int(await queue.purge(args.queue))

    print(f"purged {await _with_queue(settings, run)} items from {args.queue}")
    return 0
