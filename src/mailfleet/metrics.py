"""What each process counts for Prometheus (issue 15): ``GET /metrics`` on
the HTTP port of ``api`` and ``realtime``, and on ``[metrics] listen`` for
every role (the only HTTP a process of ``smtp-in``, ``submission``,
``worker-in`` or ``worker-out`` has).

Counters and histograms live in prometheus-client's default registry, one
per process, as its authors intend: the roles of one process add to the
same figures. The queues' depth and oldest age are not counted but read
from the queue store when scraped (``render``), so every process reports
the same shared queues and a scrape is the truth at that moment.

Labels stay bounded: SMTP replies by their code and enhanced code, never
by text; API routes by their template, never by path; remote domains of
deliveries are the one open set, capped at ``DOMAIN_LABELS`` (the rest is
``other``)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from mailfleet.storage.errors import BackendUnavailable

if TYPE_CHECKING:
    from mailfleet.storage.factory import Stores
    from mailfleet.storage.interfaces import QueueStats

__all__ = ["CONTENT_TYPE_LATEST", "render"]

QUEUES = ("incoming", "outgoing", "error")
DOMAIN_LABELS = 200

ROLES_RUNNING = Gauge("mailfleet_role", "1 for each role this process runs", ["role"])
SMTP_SESSIONS = Counter(
    "mailfleet_smtp_sessions_total",
    "SMTP connections, by service and whether they were admitted",
    ["service", "result"],
)
SMTP_SESSIONS_OPEN = Gauge("mailfleet_smtp_sessions_open", "SMTP sessions open now", ["service"])
SMTP_MAILS = Counter(
    "mailfleet_smtp_mails_total",
    "mails at the end of DATA: accepted (250) or refused, by reply code and enhanced code",
    ["service", "result", "code"],
)
SMTP_REFUSALS = Counter(
    "mailfleet_smtp_refusals_total",
    "MAIL FROM and RCPT TO refused, by command, reply code and enhanced code",
    ["service", "command", "code"],
)
QUEUE_OPERATIONS = Counter(
    "mailfleet_queue_operations_total",
    "queue items put, acknowledged, retried later and dead-lettered",
    ["queue", "operation"],
)
DELIVERIES = Counter(
    "mailfleet_deliveries_total",
    "outbound deliveries per recipient: delivered, deferred (tried again later) or bounced,"
    " by remote domain",
    ["result", "domain"],
)
BOUNCES = Counter("mailfleet_bounces_total", "delivery status notifications sent to senders")
FILTER_VERDICTS = Counter(
    "mailfleet_filter_verdicts_total",
    "verdicts of the inbound filters per recipient copy: ham, spam, or a quarantined virus",
    ["verdict"],
)
API_REQUESTS = Histogram(
    "mailfleet_http_request_duration_seconds",
    "HTTP API requests by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REALTIME_CONNECTIONS = Gauge(
    "mailfleet_realtime_connections", "WebSockets and long polls open now", ["kind"]
)
STORAGE_ERRORS = Counter(
    "mailfleet_storage_errors_total",
    "storage calls that failed because a backend was unavailable or full, by role",
    ["role"],
)
STORAGE_SECONDS = Histogram(
    "mailfleet_storage_seconds",
    "latency of storage calls by role and operation",
    ["role", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)

_domains: set[str] = set()
_CODE = re.compile(r"^(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?")


def reply_code(reply: str) -> str:
    """``"550 5.7.1 ..."`` → ``"550 5.7.1"``: the reason, without its words."""
    found = _CODE.match(reply)
    if found is None:
        return "other"
    return found.group(1) + (f" {found.group(2)}" if found.group(2) else "")


def count_delivery(result: str, domain: str) -> None:
    domain = domain.lower()
    if domain not in _domains:
        if len(_domains) >= DOMAIN_LABELS:
            domain = "other"
        else:
            _domains.add(domain)
    DELIVERIES.labels(result, domain).inc()


T = TypeVar("T")


async def timed(role: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    began = time.perf_counter()
    try:
        return await call()
    except BackendUnavailable:
        STORAGE_ERRORS.labels(role).inc()
        raise
    finally:
        STORAGE_SECONDS.labels(role, operation).observe(time.perf_counter() - began)


class _Sampled:
    """What one scrape read from the stores: each backend's answer, the
    queues' depth and oldest age."""

    def __init__(self, backends: dict[str, bool], queues: dict[str, QueueStats]) -> None:
        self.backends = backends
        self.queues = queues

    def collect(self) -> Any:
        up = GaugeMetricFamily(
            "mailfleet_backend_up",
            "1 when the storage role's backend answered this scrape's ping",
            labels=["role"],
        )
        for role, answered in self.backends.items():
            up.add_metric([role], 1 if answered else 0)
        depth = GaugeMetricFamily(
            "mailfleet_queue_depth",
            "items on the queue, leased and delayed ones included",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "mailfleet_queue_oldest_age_seconds", "age of the queue's oldest item", labels=["queue"]
        )
        for name, found in self.queues.items():
            depth.add_metric([name], found.depth)
            age.add_metric([name], found.oldest_age_seconds)
        yield from (up, depth, age)


async def render(stores: Stores) -> bytes:
    """The exposition text: this process's counters, then what the stores
    say now (a backend that does not answer is 0, never a failed scrape)."""
    backends: dict[str, bool] = {}
    for role, store in stores.roles():
        try:
            await store.ping()
            backends[role] = True
        except Exception:  # any failure is a backend down, which is the figure
            backends[role] = False
    queues: dict[str, QueueStats] = {}
    if backends.get("queue"):
        for name in QUEUES:
            try:
                queues[name] = await stores.queue.stats(name)
            except BackendUnavailable:
                backends["queue"] = False
    sampled = CollectorRegistry(auto_describe=False)
    sampled.register(_Sampled(backends, queues))
    return generate_latest(REGISTRY) + generate_latest(sampled)
