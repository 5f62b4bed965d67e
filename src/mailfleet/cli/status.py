"""``mailfleet status``: one screen for an operator (issue 15) on either
profile. What the stores say now (each backend's answer and latency, each
queue's depth and oldest age, the destinations ``outgoing`` is waiting on
and why), and what the processes say (health, readiness, roles, uptime,
and the deliveries they counted since they started, scraped from their
``/metrics``).

Processes are the configuration's own HTTP and operations ports unless
``--target`` names others (a fleet: one per process). Exit status 1 when a
backend or a process is down, so that scripts can use it too."""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from mailfleet.config import Settings
from mailfleet.storage.errors import StorageError
from mailfleet.storage.factory import Stores, create_stores
from mailfleet.storage.interfaces import QueueItem

QUEUES = ("incoming", "outgoing", "error")
DEFERRED_SCAN = 200  # outgoing items looked at for the destinations table
TOP = 10


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser(
        "status", help="roles, backends, queues and deliveries at a glance"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL",
        help="a process's HTTP or operations port, e.g. http://127.0.0.1:9101"
        " (repeat; default: http.listen and metrics.listen of the configuration)",
    )
    parser.add_argument("--width", type=int, default=None, help="columns (default: terminal)")
    common(parser)
    parser.set_defaults(handler=_status)


@dataclass
class Process:
    target: str
    health: str = "down"
    ready: str = "down"
    roles: list[str] = field(default_factory=list)
    started: float | None = None
    deliveries: Counter[str] = field(default_factory=Counter)


def _targets(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.target:
        return [t.rstrip("/") for t in args.target]
    found = [f"http://{settings.http.listen}"]
    if settings.metrics.listen:
        found.append(f"http://{settings.metrics.listen}")
    return found


async def _probe(client: httpx.AsyncClient, target: str) -> Process:
    process = Process(target)
    try:
        health = await client.get(f"{target}/healthz")
        process.health = "ok" if health.status_code == 200 else f"HTTP {health.status_code}"
        ready = await client.get(f"{target}/readyz")
        checks = ready.json().get("checks", {}) if ready.status_code in (200, 503) else {}
        down = [name for name, state in checks.items() if state != "ok"]
        process.ready = "ready" if ready.status_code == 200 else f"not ready: {', '.join(down)}"
        scraped = await client.get(f"{target}/metrics")
    except httpx.HTTPError as exc:
        process.health = f"down: {type(exc).__name__}"
        return process
    if scraped.status_code != 200:
        return process
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name == "mailfleet_role" and sample.value:
                process.roles.append(sample.labels["role"])
            elif sample.name == "process_start_time_seconds":
                process.started = sample.value
            elif sample.name == "mailfleet_deliveries_total":
                process.deliveries[sample.labels["result"]] += int(sample.value)
    return process


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass
class Destination:
    items: int = 0
    recipients: int = 0
    oldest: float = 0.0
    reason: str = ""


async def _destinations(stores: Stores, now_ms: int) -> dict[str, Destination]:
    """The outgoing items with recipients deferred (tried, to be tried
    again), by remote domain, with the last reason given. Where each
    recipient stands is on the Sent copy's delivery rows: a JetStream item
    keeps no count of its attempts (decision 0009)."""
    found: dict[str, Destination] = defaultdict(Destination)
    items: list[QueueItem] = await stores.queue.list("outgoing", limit=DEFERRED_SCAN)
    for item in items:
        try:
            account_id = int(item.payload["account_id"])
            message_id = int(item.payload["message_id"])
        except (KeyError, TypeError, ValueError):
            continue
        names = set(item.payload.get("recipients", ()))
        deferred = [
            d
            for d in await stores.mailbox.get_deliveries(account_id, message_id)
            if d.email in names and d.status == "deferred"
        ]
        if not deferred:
            continue  # not tried yet
        entry = found[str(item.payload.get("domain", "?"))]
        entry.items += 1
        entry.recipients += len(deferred)
        entry.oldest = max(entry.oldest, (now_ms - item.enqueued_at) / 1000)
        entry.reason = entry.reason or next((d.detail for d in deferred if d.detail), "")
    return found


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(width=args.width, highlight=False)
    stores = create_stores(settings)
    backends: list[tuple[str, str, float]] = []
    opened = []
    for name, store in stores.roles():
        began = time.perf_counter()
        try:
            await store.open()
            opened.append(store)
            await store.ping()
            backends.append((name, "ok", time.perf_counter() - began))
        except Exception as exc:  # any failure is what the operator must see
            backends.append((name, f"down: {exc}", time.perf_counter() - began))
    healthy = all(state == "ok" for _, state, _ in backends)
    now = time.time()
    queues: list[tuple[str, str, str]] = []
    destinations: dict[str, Destination] = {}
    try:
        for queue in QUEUES:
            try:
                stats = await stores.queue.stats(queue)
                queues.append((queue, str(stats.depth), _age(stats.oldest_age_seconds)))
            except StorageError as exc:
                queues.append((queue, "?", f"down: {exc}"))
        if healthy:
            destinations = await _destinations(stores, int(now * 1000))
    finally:
        for store in reversed(opened):
            await store.close()
    async with httpx.AsyncClient(timeout=5) as client:
        processes = [await _probe(client, target) for target in _targets(args, settings)]

    shown = Table(title="Processes", title_justify="left")
    for column in ("target", "health", "readiness", "roles", "up for"):
        shown.add_column(column)
    for p in processes:
        up = _age(now - p.started) if p.started else "-"
        shown.add_row(p.target, p.health, p.ready, ", ".join(sorted(p.roles)) or "-", up)
    console.print(shown)

    table = Table(title="Backends", title_justify="left")
    for column in ("role", "state", "answered in"):
        table.add_column(column)
    for name, state, seconds in backends:
        table.add_row(name, state, f"{seconds * 1000:.1f} ms")
    console.print(table)

    table = Table(title="Queues", title_justify="left")
    for column in ("queue", "depth", "oldest"):
        table.add_column(column)
    for row in queues:
        table.add_row(*row)
    console.print(table)

    counted: Counter[str] = Counter()
    for p in processes:
        counted.update(p.deliveries)
    attempts = sum(counted.values())
    rate = f"{counted['delivered'] / attempts:.1%}" if attempts else "-"
    console.print(
        f"Deliveries since the processes started: {counted['delivered']} delivered,"
        f" {counted['deferred']} deferred, {counted['bounced']} bounced;"
        f" success rate {rate}"
    )

    table = Table(title="Deferred destinations (outgoing)", title_justify="left")
    for column in ("domain", "items", "recipients", "oldest", "last reason"):
        table.add_column(column)
    ranked = sorted(destinations.items(), key=lambda kv: (-kv[1].items, -kv[1].oldest))
    for domain, d in ranked[:TOP]:
        table.add_row(domain, str(d.items), str(d.recipients), _age(d.oldest), d.reason or "-")
    if not ranked:
        table.add_row("-", "0", "0", "-", "nothing deferred")
    console.print(table)
    return 0 if healthy and all(p.health == "ok" for p in processes) else 1
