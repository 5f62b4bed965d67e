"""worker-out against real SMTP peers on loopback: aiosmtpd scripted per test,
found through static routes or a real DNS server (dnsmasq)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest

from mailfleet.ids import now_ms
from mailfleet.proto.dkim import dns_records, generate_key
from mailfleet.server import ROLES
from mailfleet.storage.interfaces import DkimKey
from tests.conftest import PASSWORD, Service, StartService, User
from tests.support.dns import DnsServer
from tests.support.dns import dns_server as dns_server
from tests.support.postfix import PostfixInstance
from tests.support.smtp_peer import SmtpPeer
from tests.test_restart import run_cli

REMOTE = "remote.test"
# Retry delays of 0.2, 0.4, 0.8 s ...: the schedule's shape, fast.
FAST_RETRIES = {"retry_schedule_seconds": [1, 2, 4], "time_scale": 0.2, "jitter": 0}
# The DNS server of these tests names MX hosts on 127.0.0.x.
LOOPBACK_MX = {"allow_private_destinations": True}


async def start_outbound(
    start_service: StartService,
    *,
    routes: dict[str, str] | None = None,
    dns: DnsServer | None = None,
    remote_port: int = 25,
    delivery: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    filters: dict[str, Any] | None = None,
) -> Service:
    smtp: dict[str, Any] = {"routes": routes or {}}
    if dns is not None:
        smtp |= {"dns_servers": dns.nameservers, "dns_port": dns.port, "dns_timeout_seconds": 2}
    overrides = {
        "smtp": smtp,
        "delivery": {
            "remote_port": remote_port,
            **FAST_RETRIES,
            **LOOPBACK_MX,
            **(delivery or {}),
        },
        "filters": filters or {},
    }
    return await start_service(overrides, data_dir=data_dir, roles=ROLES)


async def sent_delivery(user: User, sent_id: str) -> dict[str, dict[str, Any]]:
    response = await user.client.get(f"/v1/messages/{sent_id}")
    assert response.status_code == 200, response.text
    return {d["email"]: d for d in response.json()["delivery"]}


async def wait_delivery(
    user: User, sent_id: str, want: dict[str, str], timeout: float = 15
) -> dict[str, dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        delivery = await sent_delivery(user, sent_id)
        if {e: d["status"] for e, d in delivery.items()} == want:
            return delivery
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"delivery stayed {delivery}, wanted {want}")
        await asyncio.sleep(0.05)


async def test_routed_delivery_pipelines_recipients_and_reuses_connections(
    start_service: StartService, tmp_path: Path
) -> None:
    peer = await SmtpPeer(tls_dir=tmp_path / "peer-tls").start()
    service = await start_outbound(start_service, routes={REMOTE: f"127.0.0.1:{peer.port}"})
    alice = await service.user("alice", "Alice")
    sent = await alice.send(
        to=[{"email": f"carol@{REMOTE}"}, {"email": f"dave@{REMOTE}"}],
        bcc=[{"email": f"erin@{REMOTE}"}],
        subject="Pipelined",
        body="one transaction for three recipients",
    )
    await wait_delivery(
        alice,
        sent["id"],
        {f"{u}@{REMOTE}": "delivered" for u in ("carol", "dave", "erin")},
    )
    assert len(peer.delivered) == 1
    delivered = peer.delivered[0]
    assert delivered.mail_from == "alice@example.com"
    assert sorted(delivered.recipients) == [f"{u}@{REMOTE}" for u in ("carol", "dave", "erin")]
    assert delivered.tls  # STARTTLS was offered, so it was used
    message = email.message_from_bytes(delivered.data, policy=email.policy.default)
    assert message["Subject"] == "Pipelined"
    assert message["Bcc"] is None and b"erin" not in delivered.data
    assert any(o.startswith("SIZE=") for o in peer.mail_options[0])

    # More mail to the same domain rides the connection already open.
    for n in range(4):
        more = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body=f"more {n}")
        await wait_delivery(alice, more["id"], {f"carol@{REMOTE}": "delivered"})
    assert len(peer.delivered) == 5
    assert peer.connections == 1
    await peer.stop()


async def test_connections_per_destination_are_limited(
    start_service: StartService, tmp_path: Path
) -> None:
    release = asyncio.Event()
    peer = await SmtpPeer().start()
    peer.stall_data = release
    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{peer.port}"},
        delivery={"connections_per_destination": 2},
    )
    alice = await service.user("alice")
    sent = [await alice.send(to=[{"email": f"r{n}@{REMOTE}"}], body=f"mail {n}") for n in range(6)]
    await asyncio.wait_for(peer.stalled.wait(), 10)
    # A third delivery waits for the destination (rather than sleeping and
    # hoping it has tried by then): still two connections.
    limits = service.runtime.outgoing.transport._limits
    deadline = asyncio.get_running_loop().time() + 10
    while limits.get(REMOTE, (None, 0))[1] < 3:
        assert asyncio.get_running_loop().time() < deadline, limits
        await asyncio.sleep(0.02)
    assert peer.max_open_connections == 2
    release.set()
    for n, s in enumerate(sent):
        await wait_delivery(alice, s["id"], {f"r{n}@{REMOTE}": "delivered"})
    assert peer.max_open_connections == 2
    # Nothing is kept per destination once no delivery waits for it.
    assert service.runtime.outgoing.transport._limits == {}
    await peer.stop()


async def test_second_mx_takes_the_mail_when_the_first_refuses_connections(
    start_service: StartService, dns_server: DnsServer
) -> None:
    peer = await SmtpPeer("127.0.0.1").start()
    # mx1 is 127.0.0.2, where nothing listens on the peer's port: refused.
    dns_server.mx(REMOTE, f"mx1.{REMOTE}", 10).a(f"mx1.{REMOTE}", "127.0.0.2")
    dns_server.mx(REMOTE, f"mx2.{REMOTE}", 20).a(f"mx2.{REMOTE}", "127.0.0.1")
    dns_server.start()
    service = await start_outbound(start_service, dns=dns_server, remote_port=peer.port)
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="via the backup MX")
    delivery = await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"})
    assert "250" in delivery[f"carol@{REMOTE}"]["detail"]
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    await peer.stop()


async def test_temporary_failures_are_retried_with_backoff(start_service: StartService) -> None:
    peer = await SmtpPeer(data=lambda n: "451 4.3.0 try later" if n <= 2 else None).start()
    service = await start_outbound(start_service, routes={REMOTE: f"127.0.0.1:{peer.port}"})
    # The delays worker-out plans, as it plans them: the gaps the peer sees
    # are those plus whatever a loaded machine adds, so only their lower
    # bounds say anything.
    planned: list[float] = []
    outgoing = service.runtime.outgoing
    plan = outgoing.retry_delay

    def planning(attempts: int) -> float:
        planned.append(plan(attempts))
        return planned[-1]

    outgoing.retry_delay = planning
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="third time lucky")

    deferred = await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "deferred"})
    status = deferred[f"carol@{REMOTE}"]
    assert "451 4.3.0 try later" in status["detail"]
    assert status["next_attempt_at"] is not None

    await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"})
    assert peer.data_count == 3
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    # Exponential: 1, 2, 4 schedule seconds at FAST_RETRIES' time scale (each
    # attempt plans its retry; the third, delivered, needed none).
    assert planned == pytest.approx([0.2, 0.4, 0.8])
    first, second, third = peer.transactions
    assert second - first >= 0.2  # never sooner than planned
    assert third - second >= 0.4
    await peer.stop()


async def test_permanent_failure_bounces_one_recipient_and_delivers_the_other(
    start_service: StartService, dns_server: DnsServer
) -> None:
    def rcpt(address: str, n: int) -> str | None:
        return (
            "550 5.1.1 <nobody@remote.test>: no such user" if address.startswith("nobody") else None
        )

    peer = await SmtpPeer(rcpt=rcpt).start()
    # With the sender checks on (a DNS server that knows none of our
    # domains): the bounce, from the postmaster of alice's hosted domain,
    # is ours, not a forgery of it, and reaches her Inbox.
    dns_server.start()
    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{peer.port}"},
        dns=dns_server,
        filters={"sender_auth": True},
    )
    alice = await service.user("alice")
    sent = await alice.send(
        to=[{"email": f"carol@{REMOTE}"}, {"email": f"nobody@{REMOTE}"}],
        subject="Quarterly figures",
        body="see attached",
    )
    delivery = await wait_delivery(
        alice, sent["id"], {f"carol@{REMOTE}": "delivered", f"nobody@{REMOTE}": "bounced"}
    )
    assert "550 5.1.1" in delivery[f"nobody@{REMOTE}"]["detail"]
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    assert peer.accepted(f"nobody@{REMOTE}") == []

    inbox = await alice.wait_for("inbox", 1)
    assert len(inbox) == 1
    bounce = inbox[0]
    assert bounce["subject"] == "Undelivered Mail Returned to Sender"
    raw = (await alice.client.get(f"/v1/messages/{bounce['id']}/raw")).content
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert b"Final-Recipient: rfc822; nobody@remote.test" in raw
    assert b"Status: 5.1.1" in raw
    assert b"Action: failed" in raw
    assert b"carol@remote.test\r\nStatus" not in raw  # only the failed recipient
    assert b"Subject: Quarterly figures" in raw  # the original headers come back
    assert b"see attached" not in raw  # not the body
    # The bounce threads with the message it is about.
    full = (await alice.client.get(f"/v1/messages/{bounce['id']}")).json()
    sent_full = (await alice.client.get(f"/v1/messages/{sent['id']}")).json()
    assert full["in_reply_to"] == sent_full["message_id_header"]
    # One bounce, not one per retry: once nothing is left to try or to deliver.
    queue = service.runtime.stores.queue
    deadline = asyncio.get_running_loop().time() + 15
    while await queue.list("outgoing") or await queue.list("incoming"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert len(await alice.messages("inbox")) == 1
    await peer.stop()


async def test_null_mx_bounces_at_once_and_expired_mail_bounces(
    start_service: StartService, dns_server: DnsServer
) -> None:
    dns_server.null_mx("nomail.test").mx(REMOTE, f"mx.{REMOTE}", 10)
    dns_server.a(f"mx.{REMOTE}", "127.0.0.1").start()
    closed = await SmtpPeer().start()
    await closed.stop()  # its port now refuses connections
    service = await start_outbound(
        start_service,
        dns=dns_server,
        remote_port=closed.port,
        # Gives up after about a second of failures.
        delivery={"max_age_seconds": 5},
    )
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": "x@nomail.test"}], body="nobody takes this")
    delivery = await wait_delivery(alice, sent["id"], {"x@nomail.test": "bounced"}, timeout=5)
    assert "null MX" in delivery["x@nomail.test"]["detail"]

    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="server down for good")
    deferred = await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "deferred"})
    assert "refused" in deferred[f"carol@{REMOTE}"]["detail"].lower()
    bounced = await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "bounced"})
    assert "gave up after" in bounced[f"carol@{REMOTE}"]["detail"]
    inbox = await alice.wait_for("inbox", 2)
    assert [m["subject"] for m in inbox] == ["Undelivered Mail Returned to Sender"] * 2
    raw = (await alice.client.get(f"/v1/messages/{inbox[0]['id']}/raw")).content
    assert b"Status: 4.4.7" in raw


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_deferred_recipient_is_retried_alone(
    start_service: StartService, pipelining: bool
) -> None:
    peer = await SmtpPeer(pipelining=pipelining).start()
    peer.rcpt = lambda address, n: "452 4.2.2 mailbox full" if address.startswith("full") else None
    service = await start_outbound(start_service, routes={REMOTE: f"127.0.0.1:{peer.port}"})
    alice = await service.user("alice")
    sent = await alice.send(
        to=[{"email": f"full@{REMOTE}"}, {"email": f"carol@{REMOTE}"}], body="partly"
    )
    delivery = await wait_delivery(
        alice, sent["id"], {f"full@{REMOTE}": "deferred", f"carol@{REMOTE}": "delivered"}
    )
    assert "452 4.2.2" in delivery[f"full@{REMOTE}"]["detail"]
    peer.rcpt = None  # the mailbox has room again
    await wait_delivery(
        alice, sent["id"], {f"full@{REMOTE}": "delivered", f"carol@{REMOTE}": "delivered"}
    )
    # Never twice to the recipient that already had it.
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    assert len(peer.accepted(f"full@{REMOTE}")) == 1
    await peer.stop()


async def test_mail_reaches_a_real_postfix_found_through_dns_dkim_signed_without_bcc(
    start_service: StartService, dns_server: DnsServer, tmp_path: Path
) -> None:
    postfix = PostfixInstance(REMOTE, ["carol", "dave"])
    try:
        await asyncio.to_thread(postfix.start)
        pem, public = generate_key()
        records = dns_records("example.com", "s1", public, f"mx.{REMOTE}")
        dkim_name, _, dkim_value = records[0]
        dns_server.txt(dkim_name, dkim_value)
        dns_server.mx(REMOTE, f"mx.{REMOTE}", 10).a(f"mx.{REMOTE}", "127.0.0.1").start()
        service = await start_outbound(start_service, dns=dns_server, remote_port=postfix.port)
        await service.runtime.stores.directory.add_dkim_key(
            DkimKey("example.com", "s1", pem, now_ms())
        )
        alice = await service.user("alice", "Alice")
        pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
        upload = await alice.upload("report.pdf", pdf, "application/pdf")
        sent = await alice.send(
            to=[{"email": f"carol@{REMOTE}", "name": "Carol"}],
            bcc=[{"email": f"dave@{REMOTE}"}],
            subject="Grüße from mailfleet",
            body="Signed, sealed, delivered.\n",
            attachments=[upload["id"]],
        )
        await wait_delivery(
            alice, sent["id"], {f"carol@{REMOTE}": "delivered", f"dave@{REMOTE}": "delivered"}
        )
        for user in ("carol", "dave"):
            for _ in range(100):  # Postfix hands it to its virtual agent a moment later
                if postfix.maildir_messages(user):
                    break
                await asyncio.sleep(0.05)
            (raw,) = postfix.maildir_messages(user)
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert message["Subject"] == "Grüße from mailfleet"
            assert message["Bcc"] is None
            # Postfix prepends its own trace fields (Delivered-To ...); what we
            # sent starts at our signature, and names no Bcc recipient.
            assert raw.startswith(b"Return-Path: <alice@example.com>")
            assert b"dave" not in raw[raw.index(b"DKIM-Signature:") :]
            attachment = next(message.iter_attachments())
            assert attachment.get_filename() == "report.pdf"
            assert attachment.get_content() == pdf

            def published(name: bytes, timeout: int = 5) -> bytes:
                answer = dns.resolver.Resolver(configure=False)
                answer.nameservers, answer.port = dns_server.nameservers, dns_server.port
                txt = answer.resolve(name.decode().rstrip("."), "TXT")
                return b"".join(s for rdata in txt for s in rdata.strings)

            # Maildir files have LF line ends; DKIM is computed over CRLF.
            assert dkim.verify(raw.replace(b"\n", b"\r\n"), dnsfunc=published)
            assert b"d=example.com" in raw and b"s=s1" in raw
    finally:
        await asyncio.to_thread(postfix.stop)


async def test_queue_cli_shows_attempts_retries_now_and_cancels(
    start_service: StartService, tmp_path: Path
) -> None:
    peer = await SmtpPeer(data=lambda n: "451 4.3.0 disk full, later").start()
    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{peer.port}"},
        delivery={"retry_schedule_seconds": [3600], "time_scale": 1},
        data_dir=tmp_path / "data",
    )
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="waits an hour")
    await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "deferred"})

    listing = await asyncio.to_thread(run_cli, tmp_path / "data", "queue", "list", "outgoing")
    assert listing.returncode == 0, listing.stderr
    (line,) = [x for x in listing.stdout.splitlines() if REMOTE in x]
    item_id = line.split()[0]
    # The queue's own count is exact only where the queue keeps delivery state
    # (QueueItem.attempts); the Sent copy's standing is shown on every queue.
    assert re.search(r"\battempts=\d+\b", line), line
    assert "451 4.3.0 disk full" in line
    shown = await asyncio.to_thread(
        run_cli, tmp_path / "data", "queue", "show", "outgoing", item_id
    )
    assert json.loads(shown.stdout)["payload"]["recipients"] == [f"carol@{REMOTE}"]

    # The server is fixed; the operator does not wait the hour.
    peer.data = None
    retried = await asyncio.to_thread(
        run_cli, tmp_path / "data", "queue", "retry", "outgoing", item_id
    )
    assert retried.returncode == 0, retried.stderr
    await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"})
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1

    peer.data = lambda n: "451 4.3.0 disk full again"
    doomed = await alice.send(to=[{"email": f"dave@{REMOTE}"}], body="never mind")
    await wait_delivery(alice, doomed["id"], {f"dave@{REMOTE}": "deferred"})
    listing = await asyncio.to_thread(run_cli, tmp_path / "data", "queue", "list", "outgoing")
    (line,) = [x for x in listing.stdout.splitlines() if "dave@" in x]
    removed = await asyncio.to_thread(
        run_cli, tmp_path / "data", "queue", "remove", "outgoing", line.split()[0]
    )
    assert removed.returncode == 0, removed.stderr
    delivery = await sent_delivery(alice, doomed["id"])
    assert delivery[f"dave@{REMOTE}"]["status"] == "bounced"
    assert delivery[f"dave@{REMOTE}"]["detail"] == "cancelled by an administrator"
    await peer.stop()


async def test_items_that_cannot_be_delivered_go_to_error_with_the_reason(
    start_service: StartService,
) -> None:
    service = await start_outbound(
        start_service,
        routes={REMOTE: "127.0.0.1:9"},
        delivery={"max_attempts_for_bad_items": 1},
    )
    alice = await service.user("alice")
    queue = service.runtime.stores.queue
    base = {
        "account_id": int(alice.id),
        "message_id": 1,
        "mail_from": alice.email,
        "domain": REMOTE,
        "recipients": [f"carol@{REMOTE}"],
    }
    missing = await queue.put("outgoing", {**base, "raw_hash": "0" * 64})
    broken = await queue.put("outgoing", {"domain": REMOTE})
    deadline = asyncio.get_running_loop().time() + 10
    while len(errors := await queue.list("error")) < 2:
        assert asyncio.get_running_loop().time() < deadline, errors
        await asyncio.sleep(0.05)
    reasons = {item.id: item.last_error for item in errors}
    assert "raw message missing" in reasons[missing]
    assert "KeyError" in reasons[broken]
    assert {item.origin for item in errors} == {"outgoing"}
    assert (await queue.stats("outgoing")).depth == 0


async def test_an_mx_that_greets_with_421_is_skipped_for_the_next(
    start_service: StartService, dns_server: DnsServer
) -> None:
    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.3.2 too busy, try another MX\r\n")
        await writer.drain()
        writer.close()

    peer = await SmtpPeer("127.0.0.1").start()
    busy_server = await asyncio.start_server(busy, "127.0.0.3", peer.port)
    dns_server.mx(REMOTE, f"mx1.{REMOTE}", 5).a(f"mx1.{REMOTE}", "127.0.0.3")
    dns_server.mx(REMOTE, f"mx2.{REMOTE}", 50).a(f"mx2.{REMOTE}", "127.0.0.1")
    dns_server.start()
    service = await start_outbound(start_service, dns=dns_server, remote_port=peer.port)
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="the busy one is skipped")
    await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"})
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    busy_server.close()
    await peer.stop()


async def test_size_and_smtputf8_the_remote_cannot_take_bounce_at_once(
    start_service: StartService,
) -> None:
    small = await SmtpPeer(size_limit=2000).start()
    ascii_only = await SmtpPeer(smtputf8=False).start()
    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{small.port}", "ascii.test": f"127.0.0.1:{ascii_only.port}"},
    )
    alice = await service.user("alice")
    big = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="x" * 5000)
    delivery = await wait_delivery(alice, big["id"], {f"carol@{REMOTE}": "bounced"})
    assert "at most 2000 bytes" in delivery[f"carol@{REMOTE}"]["detail"]
    assert small.data_count == 0  # refused before sending a byte of it

    utf8 = await alice.send(to=[{"email": "jürgen@ascii.test"}], body="needs SMTPUTF8")
    delivery = await wait_delivery(alice, utf8["id"], {"jürgen@ascii.test": "bounced"})
    assert "SMTPUTF8" in delivery["jürgen@ascii.test"]["detail"]
    inbox = await alice.wait_for("inbox", 2)
    raws = [(await alice.client.get(f"/v1/messages/{m['id']}/raw")).content for m in inbox]
    assert any(b"Status: 5.3.4" in raw for raw in raws)
    assert any(b"Status: 5.6.7" in raw for raw in raws)
    await small.stop()
    await ascii_only.stop()


async def test_a_send_whose_outgoing_item_was_lost_is_queued_again(
    start_service: StartService, tmp_path: Path
) -> None:
    peer = await SmtpPeer().start()
    # First without worker-out: the send stores its Sent copy and queues.
    first = await start_service(
        {"smtp": {"routes": {REMOTE: f"127.0.0.1:{peer.port}"}}}, data_dir=tmp_path / "data"
    )
    alice = await first.user("alice")
    sent = await alice.send(
        to=[{"email": f"carol@{REMOTE}"}, {"email": "dave@other.test"}], body="survives"
    )
    queue = first.runtime.stores.queue
    items = await queue.list("outgoing")
    assert len(items) == 2
    # A crash between the Sent copy and the queue: the items never existed.
    for item in items:
        assert await queue.remove("outgoing", item.id)
    await first.close()

    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{peer.port}", "other.test": f"127.0.0.1:{peer.port}"},
        delivery={"stale_after_seconds": 0.5, "sweep_interval_seconds": 0.2},
        data_dir=tmp_path / "data",
    )
    sweeps = 0
    outgoing = service.runtime.outgoing
    requeue = outgoing.requeue_stale

    async def counted() -> int:
        nonlocal sweeps
        requeued = await requeue()
        sweeps += 1
        return requeued

    outgoing.requeue_stale = counted
    login = await service.client().post(
        "/v1/sessions", json={"email": alice.email, "password": PASSWORD}
    )
    alice = User(service.client(login.json()["token"]), alice.account, login.json()["token"])
    await wait_delivery(
        alice, sent["id"], {f"carol@{REMOTE}": "delivered", "dave@other.test": "delivered"}
    )
    # Two more whole sweeps, then nothing in flight: delivered mail is not
    # queued again (counted sweeps, not a sleep a loaded machine may outlast).
    after = sweeps
    deadline = asyncio.get_running_loop().time() + 15
    while sweeps < after + 2 or await service.runtime.stores.queue.list("outgoing"):
        assert asyncio.get_running_loop().time() < deadline, sweeps
        await asyncio.sleep(0.05)
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    assert len(peer.accepted("dave@other.test")) == 1
    assert (await service.runtime.stores.queue.stats("outgoing")).depth == 0
    await peer.stop()


async def test_a_send_queued_twice_is_delivered_once(
    start_service: StartService, tmp_path: Path
) -> None:
    """The queue dedupes for a window only, so the sweep may queue a send
    beside an item still in flight: the recipient claims on the Sent copy
    let one attempt deliver and the other find nothing left to do."""
    release = asyncio.Event()
    peer = await SmtpPeer().start()
    peer.stall_data = release
    service = await start_outbound(start_service, routes={REMOTE: f"127.0.0.1:{peer.port}"})
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": f"carol@{REMOTE}"}], body="once")
    await asyncio.wait_for(peer.stalled.wait(), 10)  # the first attempt holds DATA
    queue = service.runtime.stores.queue
    (item,) = await queue.list("outgoing")
    await queue.put("outgoing", item.payload)  # what a sweep past the window adds
    deadline = asyncio.get_running_loop().time() + 10
    while (await queue.stats("outgoing")).depth > 1:  # the copy found carol claimed
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    release.set()
    await wait_delivery(alice, sent["id"], {f"carol@{REMOTE}": "delivered"})
    while (await queue.stats("outgoing")).depth:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert len(peer.accepted(f"carol@{REMOTE}")) == 1
    assert peer.connections == 1
    await peer.stop()


async def test_mx_hosts_on_internal_addresses_are_refused_unless_allowed(
    start_service: StartService, dns_server: DnsServer
) -> None:
    peer = await SmtpPeer("127.0.0.1").start()
    dns_server.mx("evil.test", "mx.evil.test", 10).a("mx.evil.test", "127.0.0.1", "10.1.2.3")
    dns_server.start()
    service = await start_outbound(
        start_service,
        dns=dns_server,
        remote_port=peer.port,
        delivery={"allow_private_destinations": False},
    )
    alice = await service.user("alice")
    sent = await alice.send(to=[{"email": "x@evil.test"}], body="points at our own network")
    delivery = await wait_delivery(alice, sent["id"], {"x@evil.test": "bounced"})
    assert "non-public addresses" in delivery["x@evil.test"]["detail"]
    assert peer.connections == 0  # never even connected
    inbox = await alice.wait_for("inbox", 1)
    raw = (await alice.client.get(f"/v1/messages/{inbox[0]['id']}/raw")).content
    assert b"Status: 5.4.4" in raw
    await peer.stop()
