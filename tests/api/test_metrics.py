"""``GET /metrics`` after real traffic (issue 15): the numbers move as an
operator reading them would expect. Mail received over SMTP and sent through
the API counts sessions, accepted and refused mails by reason, queue
operations, deliveries by result and remote domain, and API latency by route
template; a stopped remote MX makes ``outgoing``'s depth and oldest age grow
and its return drains them; a process of worker roles only answers
``/metrics``, ``/healthz`` and ``/readyz`` on its operations port; clients
outside ``metrics.allow_from`` are refused."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailfleet.config import deep_merge
from mailfleet.server import Server
from mailfleet.storage.errors import BackendUnavailable
from tests.conftest import DOMAIN, Service, StartService, make_settings
from tests.delivery.test_outbound import REMOTE, start_outbound, wait_delivery
from tests.support.profile import Profile
from tests.support.smtp_peer import SmtpPeer
from tests.test_restart import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base_url: str) -> Samples:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that have ``labels`` (and any others)."""
    want = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= set(have))


async def until(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.05)


def smtp_send(port: int, rcpt: str, subject: str, body: str = "counted") -> tuple[int, bytes]:
    message = EmailMessage()
    message["From"] = "sender@outside.example"
    message["To"] = rcpt
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port) as client:
        try:
            client.send_message(message)
        except smtplib.SMTPRecipientsRefused as refused:
            code, text = next(iter(refused.recipients.values()))
            return code, text
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
            return error.smtp_code, error.smtp_error
    return 250, b""


async def test_mail_in_and_api_calls_move_the_counters(start_service: StartService) -> None:
    service = await start_service({"limits": {"max_message_bytes": 100_000}})
    bob = await service.user("bob")
    before = await scrape(service.base_url)

    code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, bob.email, "in")
    assert code == 250
    await bob.wait_for("inbox", 1)
    # Too big: refused at the end of DATA, with its reason in the labels.
    limit = service.runtime.settings.limits.max_message_bytes
    code, _ = await asyncio.to_thread(
        smtp_send, service.smtp_port, bob.email, "big", "x" * (limit + 1000)
    )
    assert code == 552
    code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, f"nobody@{DOMAIN}", "lost")
    assert code == 550

    after = await scrape(service.base_url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mailfleet_smtp_mails_total", service="smtp-in", result="accepted") == 1
    assert moved("mailfleet_smtp_mails_total", code="250 2.0.0") == 1
    sessions = moved("mailfleet_smtp_sessions_total", service="smtp-in", result="admitted")
    assert sessions == 3
    refused = moved(
        "mailfleet_smtp_refusals_total", service="smtp-in", command="MAIL", code="552 5.3.4"
    )
    assert refused == 1
    unknown_user = moved("mailfleet_smtp_refusals_total", command="RCPT", code="550 5.1.1")
    assert unknown_user == 1
    assert moved("mailfleet_queue_operations_total", queue="incoming", operation="put") == 1
    assert moved("mailfleet_queue_operations_total", queue="incoming", operation="ack") == 1
    assert moved("mailfleet_filter_verdicts_total", verdict="ham") == 1
    assert value(after, "mailfleet_queue_depth", queue="incoming") == 0
    for role in ("directory", "mailbox", "search", "blobs", "queue", "cache", "events"):
        assert value(after, "mailfleet_backend_up", role=role) == 1, role
    # Every storage role's calls are timed (storage/metered.py): worker-in
    # stored the one mail in one batch, smtp-in wrote its raw blob first.
    stored = moved("mailfleet_storage_seconds_count", role="mailbox", operation="store_messages")
    assert stored == 1
    assert moved("mailfleet_storage_seconds_count", role="blobs", operation="put") >= 1
    assert moved("mailfleet_storage_seconds_count", role="directory", operation="get_session") >= 1
    # The listing bob.wait_for polled, by its route template.
    listing = moved(
        "mailfleet_http_request_duration_seconds_count",
        route="/v1/folders/{folder_id}/messages",
        method="GET",
        status="200",
    )
    assert listing >= 1
    unknown = await bob.client.get("/v1/messages/1")
    assert unknown.status_code == 404
    last = await scrape(service.base_url)
    assert (
        value(
            last,
            "mailfleet_http_request_duration_seconds_count",
            route="/v1/messages/{message_id}",
            method="GET",
            status="404",
        )
        - value(
            after,
            "mailfleet_http_request_duration_seconds_count",
            route="/v1/messages/{message_id}",
            method="GET",
            status="404",
        )
        == 1
    )


async def test_a_failing_backend_is_counted_against_its_role(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await service.user("bob")
    before = await scrape(service.base_url)

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("blob store down")

    # The backend fails under the meter (storage/metered.py wraps it).
    monkeypatch.setattr(service.runtime.stores.blobs.inner, "put", unavailable)
    code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, bob.email, "down")
    assert code == 451

    after = await scrape(service.base_url)
    assert (
        value(after, "mailfleet_storage_errors_total", role="blobs")
        - value(before, "mailfleet_storage_errors_total", role="blobs")
        == 1
    )
    assert value(after, "mailfleet_storage_errors_total", role="mailbox") == value(
        before, "mailfleet_storage_errors_total", role="mailbox"
    )


async def test_a_stopped_remote_mx_grows_outgoing_and_its_return_drains_it(
    start_service: StartService, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: the remote MX is down
    service = await start_outbound(start_service, routes={REMOTE: f"127.0.0.1:{port}"})
    alice = await service.user("alice")
    before = await scrape(service.base_url)
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], subject="waits")

    deferred: list[Samples] = []

    async def deferred_and_waiting() -> bool:
        found = await scrape(service.base_url)
        moved = value(
            found, "mailfleet_deliveries_total", result="deferred", domain=REMOTE
        ) - value(before, "mailfleet_deliveries_total", result="deferred", domain=REMOTE)
        if moved >= 2 and value(found, "mailfleet_queue_depth", queue="outgoing") == 1:
            deferred.append(found)
        return len(deferred) >= 2 and (
            value(deferred[-1], "mailfleet_queue_oldest_age_seconds", queue="outgoing")
            > value(deferred[0], "mailfleet_queue_oldest_age_seconds", queue="outgoing")
        )

    await until("outgoing deferred and ageing", deferred_and_waiting)
    assert value(deferred[-1], "mailfleet_queue_oldest_age_seconds", queue="outgoing") > 0

    peer = await SmtpPeer(port=port).start()
    try:
        await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"}, timeout=30)

        async def drained() -> bool:
            found = await scrape(service.base_url)
            return value(found, "mailfleet_queue_depth", queue="outgoing") == 0

        await until("outgoing drained", drained)
        after = await scrape(service.base_url)
        assert value(after, "mailfleet_queue_oldest_age_seconds", queue="outgoing") == 0
        delivered = value(
            after, "mailfleet_deliveries_total", result="delivered", domain=REMOTE
        ) - value(before, "mailfleet_deliveries_total", result="delivered", domain=REMOTE)
        assert delivered == 1
        assert len(peer.delivered) == 1
    finally:
        await peer.stop()


async def test_worker_roles_answer_on_their_operations_port(
    service: Service, profile: Profile, tmp_path: Path
) -> None:
    # ``service`` serves the API; this process only works the queues.
    operations = f"127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    settings = make_settings(
        data,
        deep_merge({"storage": profile.storage(data)}, {"metrics": {"listen": operations}}),
    )
    workers = await Server.open(settings, ("worker-in", "worker-out"))
    await workers.start()
    try:
        assert workers.http_socket is None and workers.smtp_socket is None
        async with httpx.AsyncClient(base_url=f"http://{operations}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert (await client.get("/v1/folders")).status_code == 404  # no API here
        samples = await scrape(f"http://{operations}")
        assert ("mailfleet_queue_depth", (("queue", "outgoing"),)) in samples
        assert value(samples, "mailfleet_backend_up", role="queue") == 1
    finally:
        await workers.stop()


async def test_metrics_are_for_the_operators_network(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        # uvicorn believes X-Forwarded-For from 127.0.0.1, as from HAProxy.
        outside = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        inside = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert outside.status_code == 403, outside.text
    assert outside.json()["error"]["code"] == "forbidden"
    assert inside.status_code == 200
