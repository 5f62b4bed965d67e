"""``mailfleet queue list|show|retry|remove|purge QUEUE``: inspect and replay
the work queues (``incoming``, ``outgoing``, ``error``)."""

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
        "retry", help="put an error item back on its queue, or make an item due now"
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


def _line(item: QueueItem) -> str:
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


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def run(queue: Any) -> None:
        stats = await queue.stats(args.queue)
        print(f"{args.queue}: {stats.depth} items, oldest {stats.oldest_age_seconds:.0f} s")
        for item in await queue.list(args.queue, limit=args.limit):
            print(_line(item))

    await _with_queue(settings, run)
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def run(queue: Any) -> QueueItem | None:
        item: QueueItem | None = await queue.get(args.queue, args.item_id)
        return item

    item = await _with_queue(settings, run)
    if item is None:
        raise NotFound(f"no item {args.item_id} on {args.queue}")
    print(
        json.dumps(
            {
                "queue": item.queue,
                "id": item.id,
                "attempts": item.attempts,
                "enqueued_at": _when(item.enqueued_at),
                "next_attempt_at": _when(item.not_before),
                "origin": item.origin or None,
                "last_error": item.last_error or None,
                "payload": item.payload,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


async def _retry(args: argparse.Namespace, settings: Settings) -> int:
    async def run(queue: Any) -> bool:
        if args.queue == "error":
            return bool(await queue.replay(args.item_id))
        item = await queue.get(args.queue, args.item_id)
        if item is None:
            return False
        await queue.retry(item, delay_seconds=0, error=item.last_error)
        return True

    if not await _with_queue(settings, run):
        raise NotFound(f"no item {args.item_id} on {args.queue}")
    print(f"{args.item_id} is due now")
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
