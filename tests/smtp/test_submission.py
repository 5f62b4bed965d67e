"""SMTP submission as a user's mail client sees it: real clients (smtplib,
swaks) on loopback, results checked through the HTTP API and the queue."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import smtplib
import ssl
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailfleet.smtp.submission import is_loopback
from mailfleet.storage.errors import BackendUnavailable
from tests.conftest import DOMAIN, PASSWORD, Service, StartService, User
from tests.support.profile import Profile, config_args
from tests.support.tools import require_program
from tests.test_restart import free_port

PDF = b"%PDF-1.7\n" + os.urandom(30_000) + b"\n%%EOF\n"
ROLES = ("api", "submission")  # no worker-out: queued mail must stay queued
CLIENT = "thunderbird.example"


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service(roles=ROLES)


def connect(service: Service, *, tls: bool = True) -> smtplib.SMTP:
    """A client after EHLO, and after STARTTLS and EHLO again when ``tls``."""
    host, port = service.server.submission_address
    client = smtplib.SMTP(host, port, timeout=10)
    client.ehlo(CLIENT)
    if tls:
        cert = Path(service.runtime.settings.data_dir) / "tls" / "smtp-cert.pem"
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the certificate names "localhost"; we dial 127.0.0.1
        client.starttls(context=context)
        client.ehlo(CLIENT)
    return client


def logged_in(service: Service, email: str, *, mechanism: str = "PLAIN") -> smtplib.SMTP:
    client = connect(service)
    client.user, client.password = email, PASSWORD
    authobject: Callable[..., str | None] = (
        client.auth_plain if mechanism == "PLAIN" else client.auth_login
    )
    code, text = client.auth(mechanism, authobject)
    assert (code, text[:5]) == (235, b"2.7.0"), text
    return client


def try_auth(client: smtplib.SMTP, login: str, password: str) -> tuple[int, bytes]:
    """AUTH PLAIN with an initial response; the reply, whatever it is."""
    credentials = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    return client.docmd("AUTH", f"PLAIN {credentials}")


def mail(
    sender: str,
    to: str,
    *,
    cc: str = "",
    bcc: str = "",
    subject: str = "Hello",
    attachment: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if bcc:
        msg["Bcc"] = bcc
    msg["Subject"] = subject
    msg["Date"] = "Tue, 24 Nov 2026 20:00:00 +0000"
    msg["Message-ID"] = f"<{os.urandom(6).hex()}@{CLIENT}>"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content("Hi Bob,\n\nthe plan is attached.\n")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="plan.pdf")
    return msg.as_bytes(policy=policy.SMTP)


async def outgoing(service: Service) -> list[dict[str, Any]]:
    items = await service.runtime.stores.queue.list("outgoing")
    return sorted((item.payload for item in items), key=lambda p: p["domain"])


async def nothing_stored(service: Service, sender: User) -> None:
    assert await sender.messages("sent") == []
    assert await outgoing(service) == []


# -- the whole path ------------------------------------------------------------------


async def test_thunderbird_session_delivers_locally_and_queues_remote(
    service: Service, alice: User, bob: User
) -> None:
    dave = await service.user("dave")
    raw = mail(
        f"Alice Example <{alice.email}>",
        f"Bob Example <{bob.email}>",
        cc="Far Away <far@remote.example>",
        bcc=f"Dave <{dave.email}>, hidden@other.example",
        subject="Plan for Monday",
        attachment=PDF,
    )
    assert b"\r\nBcc: " in raw
    recipients = [bob.email, "far@remote.example", dave.email, "hidden@other.example"]

    def session() -> bytes:
        with connect(service) as client:
            for extension in ("size", "8bitmime", "smtputf8", "pipelining", "auth"):
                assert client.has_extn(extension), extension
            assert client.has_extn("enhancedstatuscodes")
            assert not client.has_extn("starttls")  # already on TLS
            assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
            client.user, client.password = alice.email, PASSWORD
            assert client.auth("PLAIN", client.auth_plain)[0] == 235
            code, text = client.mail(alice.email, [f"SIZE={len(raw)}", "BODY=8BITMIME"])
            assert (code, text[:5]) == (250, b"2.1.0")
            for recipient in recipients:
                code, text = client.rcpt(recipient)
                assert (code, text[:5]) == (250, b"2.1.5"), (recipient, text)
            code, text = client.data(raw)
            assert code == 250, text
            return text

    reply = await asyncio.to_thread(session)
    assert reply.startswith(b"2.0.0 OK queued as ")
    sent_id = reply.split()[-1].decode()

    # The hosted recipients have it in their Inbox, with no SMTP hop.
    (summary,) = await bob.messages("inbox")
    assert summary["subject"] == "Plan for Monday"
    assert summary["from"] == {"name": "Alice Example", "email": alice.email}
    assert summary["has_attachments"] is True
    assert summary["snippet"].startswith("Hi Bob, the plan is attached.")
    full = (await bob.client.get(f"/v1/messages/{summary['id']}")).json()
    assert full["bcc"] == []
    assert [a["email"] for a in full["cc"]] == ["far@remote.example"]
    (attachment,) = full["attachments"]
    assert attachment["filename"] == "plan.pdf"
    download = await bob.client.get(f"/v1/messages/{summary['id']}/attachments/{attachment['id']}")
    assert download.content == PDF
    (dave_copy,) = await dave.messages("inbox")
    dave_full = (await dave.client.get(f"/v1/messages/{dave_copy['id']}")).json()
    assert dave_full["bcc"] == []

    # The sender's copy in Sent: delivery per recipient, and only it lists Bcc.
    (sent,) = await alice.messages("sent")
    assert sent["id"] == sent_id
    own = (await alice.client.get(f"/v1/messages/{sent_id}")).json()
    assert {d["email"]: d["status"] for d in own["delivery"]} == {
        bob.email: "delivered",
        dave.email: "delivered",
        "far@remote.example": "queued",
        "hidden@other.example": "queued",
    }
    assert {a["email"]: a["name"] for a in own["bcc"]} == {
        dave.email: "Dave",
        "hidden@other.example": "",
    }
    assert own["message_id_header"] == full["message_id_header"]
    assert own["message_id_header"] == message_from_bytes(raw)["Message-ID"]

    # Bcc is in no stored raw message: the one every copy and the queue share.
    raws = [
        (await user.client.get(f"/v1/messages/{message_id}/raw")).content
        for user, message_id in ((alice, sent_id), (bob, summary["id"]), (dave, dave_copy["id"]))
    ]
    assert raws[0] == raws[1] == raws[2]
    head = raws[0].split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nbcc:" not in b"\r\n" + head
    assert b"hidden@other.example" not in raws[0]
    assert dave.email.encode() not in raws[0]
    assert raws[0].endswith(raw.split(b"\r\n\r\n", 1)[1])  # the body byte for byte

    # One outgoing item per remote domain, shaped as the API's send flow makes them.
    payloads = await outgoing(service)
    raw_hash = payloads[0]["raw_hash"]
    # One correlation id for the send, on each of its items (decision 0029).
    trace_id = payloads[0]["trace_id"]
    assert payloads == [
        {
            "account_id": int(alice.id),
            "message_id": int(sent_id),
            "raw_hash": raw_hash,
            "mail_from": alice.email,
            "domain": domain,
            "recipients": [address],
            "trace_id": trace_id,
        }
        for domain, address in (
            ("other.example", "hidden@other.example"),
            ("remote.example", "far@remote.example"),
        )
    ]
    assert await service.runtime.stores.blobs.get(raw_hash) == raws[0]
    api_sent = await alice.send(to=["x@api.example"])
    (api_payload,) = [p for p in await outgoing(service) if p["domain"] == "api.example"]
    assert {k: type(v) for k, v in api_payload.items()} == {
        k: type(v) for k, v in payloads[0].items()
    }
    assert api_payload["message_id"] == int(api_sent["id"])


async def test_auth_login_works_and_mail_is_sent(service: Service, alice: User, bob: User) -> None:
    def session() -> None:
        with logged_in(service, alice.email, mechanism="LOGIN") as client:
            assert client.sendmail(alice.email, [bob.email], mail(alice.email, bob.email)) == {}

        # Without an initial response: user name and password each after a challenge.
        with connect(service) as client:
            client.user, client.password = alice.email, PASSWORD
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
            assert client.sendmail(alice.email, [bob.email], mail(alice.email, bob.email)) == {}

    await asyncio.to_thread(session)
    assert len(await bob.messages("inbox")) == 2
    assert len(await alice.messages("sent")) == 2


async def test_swaks_auth_plain(start_service: StartService) -> None:
    swaks = require_program("swaks", "apt-get install swaks")
    # swaks does TLS only with Perl's Net::SSLeay; without it, AUTH in clear
    # text from loopback (the test setting) still checks a second client.
    probe = await asyncio.to_thread(
        subprocess.run, ["perl", "-MNet::SSLeay", "-e1"], capture_output=True, check=False
    )
    tls = probe.returncode == 0
    service = await start_service({"smtp": {"insecure_auth_on_loopback": not tls}}, roles=ROLES)
    alice = await service.user("alice")
    bob = await service.user("bob")
    host, port = service.server.submission_address
    result = await asyncio.to_thread(
        subprocess.run,
        [
            swaks,
            "--server",
            f"{host}:{port}",
            "--ehlo",
            CLIENT,
            *(["--tls"] if tls else []),
            "--auth",
            "PLAIN",
            "--auth-user",
            alice.email,
            "--auth-password",
            PASSWORD,
            "--from",
            alice.email,
            "--to",
            bob.email,
            "--header",
            "Subject: from swaks",
            "--header",
            f"From: {alice.email}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^<[-~]  235 2\.7\.0 ", result.stdout, re.MULTILINE), result.stdout
    assert [m["subject"] for m in await bob.messages("inbox")] == ["from swaks"]


# -- AUTH ----------------------------------------------------------------------------


async def test_wrong_password_unknown_user_and_disabled_account_get_535(
    service: Service, alice: User
) -> None:
    bob = await service.user("bob")
    await service.runtime.accounts.set_disabled(bob.email, True)

    def session() -> None:
        for login, password in (
            (alice.email, "not the password"),
            (f"nobody@{DOMAIN}", PASSWORD),
            (bob.email, PASSWORD),
        ):
            with connect(service) as client:
                code, text = try_auth(client, login, password)
                assert (code, text[:5]) == (535, b"5.7.8"), (login, text)
                code, text = client.mail(alice.email)
                assert (code, text[:5]) == (530, b"5.7.0")

    await asyncio.to_thread(session)


async def test_account_disabled_during_a_session_cannot_send(
    service: Service, alice: User, bob: User
) -> None:
    client = await asyncio.to_thread(logged_in, service, alice.email)
    try:
        await service.runtime.accounts.set_disabled(alice.email, True)
        code, text = await asyncio.to_thread(client.mail, alice.email)
        assert (code, text[:5]) == (550, b"5.7.1"), text
    finally:
        await asyncio.to_thread(client.close)
    assert await bob.messages("inbox") == []


async def test_auth_before_starttls_is_refused(service: Service, alice: User) -> None:
    def session() -> None:
        with connect(service, tls=False) as client:
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")
            code, text = try_auth(client, alice.email, PASSWORD)
            assert (code, text[:6]) == (538, b"5.7.11"), text
            code, text = client.mail(alice.email)
            assert (code, text[:5]) == (530, b"5.7.0")

    await asyncio.to_thread(session)


async def test_auth_without_tls_on_loopback_only_when_configured(
    start_service: StartService,
) -> None:
    service = await start_service({"smtp": {"insecure_auth_on_loopback": True}}, roles=ROLES)
    alice = await service.user("alice")
    bob = await service.user("bob")

    def session() -> None:
        with connect(service, tls=False) as client:
            assert client.has_extn("auth")
            assert client.has_extn("starttls")
            client.login(alice.email, PASSWORD)
            assert client.sendmail(alice.email, [bob.email], mail(alice.email, bob.email)) == {}

    await asyncio.to_thread(session)
    assert len(await bob.messages("inbox")) == 1
    # The same setting does not open AUTH to any other client address.
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    for remote in ("10.0.0.1", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.1", "", "unix"):
        assert not is_loopback(remote), remote


def _lockout(per_address: int = 100, per_ip: int = 100) -> dict[str, Any]:
    return {
        "auth": {
            "failed_logins_per_address": per_address,
            "failed_logins_per_ip": per_ip,
            "lockout_seconds": 60,
        }
    }


def locked_out(reply: tuple[int, bytes]) -> bool:
    code, text = reply
    return (code, text[:5]) == (454, b"4.7.0") and b"too many failed logins" in text


async def test_failed_logins_lock_the_address_at_every_door(start_service: StartService) -> None:
    service = await start_service(_lockout(per_address=3), roles=ROLES)
    alice, bob = await service.user("alice"), await service.user("bob")

    def session() -> None:
        with connect(service) as client:
            assert try_auth(client, alice.email, "guess 1")[0] == 535
            # Bytes that are not UTF-8 are a wrong password like any other.
            garbage = base64.b64encode(b"\0" + alice.email.encode() + b"\0\xff\xfe").decode()
            assert client.docmd("AUTH", f"PLAIN {garbage}")[0] == 535
            assert try_auth(client, alice.email.upper(), "guess 3")[0] == 535
            # The right password no longer helps, on this connection or another.
            assert locked_out(try_auth(client, alice.email, PASSWORD))
        with connect(service) as client:
            assert locked_out(try_auth(client, alice.email, PASSWORD))
        # The lock is the address's: Bob logs in from the same client.
        logged_in(service, bob.email).quit()

    await asyncio.to_thread(session)
    # One rule for every door: the API refuses Alice too, and says for how long.
    response = await service.client().post(
        "/v1/sessions", json={"email": alice.email, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_failures_over_the_api_lock_the_client_out_of_submission(
    start_service: StartService,
) -> None:
    service = await start_service(_lockout(per_ip=3), roles=ROLES)
    alice = await service.user("alice")
    for victim in ("a", "b", "c"):
        response = await service.client().post(
            "/v1/sessions", json={"email": f"{victim}@{DOMAIN}", "password": "123456"}
        )
        assert response.status_code == 401

    def session() -> tuple[int, bytes]:
        with connect(service) as client:
            return try_auth(client, alice.email, PASSWORD)

    assert locked_out(await asyncio.to_thread(session))


@pytest.mark.distributed_only("the embedded profile's cache is in-process: one process counts")
async def test_every_process_counts_the_same_failures(
    start_service: StartService, tmp_path: Path
) -> None:
    data = tmp_path / "fleet"
    api = await start_service(_lockout(per_address=2), data_dir=data, roles=("api",))
    submission = await start_service(_lockout(per_address=2), data_dir=data, roles=ROLES)
    alice = await api.user("alice")
    for attempt in range(2):
        response = await api.client().post(
            "/v1/sessions", json={"email": alice.email, "password": f"guess {attempt}"}
        )
        assert response.status_code == 401

    def session() -> tuple[int, bytes]:
        with connect(submission) as client:
            return try_auth(client, alice.email, PASSWORD)

    assert locked_out(await asyncio.to_thread(session))


async def test_envelope_addresses_are_nfc_and_hidden_characters_refused(
    service: Service, alice: User
) -> None:
    composed = "jürgen@remote.example"
    decomposed = unicodedata.normalize("NFD", composed)

    def session() -> None:
        with logged_in(service, alice.email) as client:
            code, text = client.mail(f"ali\u200bce@{DOMAIN}", ["SMTPUTF8"])
            assert (code, text[:5]) == (553, b"5.1.7"), text
            client.rset()
            assert client.mail(alice.email, ["SMTPUTF8"])[0] == 250
            for hidden in ("\u200b", "\u202e", "\u2066", "\u2028", "\ufeff", "\x7f"):
                code, text = client.rcpt(f"b{hidden}ob@remote.example")
                assert (code, text[:5]) == (553, b"5.1.3"), (hidden, text)
            assert client.rcpt(composed)[0] == 250
            assert client.rcpt(decomposed)[0] == 250
            assert client.data(mail(alice.email, "friends@remote.example"))[0] == 250

    await asyncio.to_thread(session)
    (item,) = await outgoing(service)
    assert item["recipients"] == [composed]


async def test_mail_before_auth_is_530(service: Service, alice: User, bob: User) -> None:
    def session() -> None:
        with connect(service) as client:
            code, text = client.mail(alice.email)
            assert (code, text[:5]) == (530, b"5.7.0")
            code, text = client.rcpt(bob.email)
            assert (code, text[:5]) == (530, b"5.7.0")
            code, text = client.docmd("DATA")
            assert (code, text[:5]) == (530, b"5.7.0")

    await asyncio.to_thread(session)
    assert await bob.messages("inbox") == []


# -- who may send what -----------------------------------------------------------------


async def test_spoofed_mail_from_is_550(service: Service, alice: User, bob: User) -> None:
    def session() -> None:
        with logged_in(service, alice.email) as client:
            for spoofed in (bob.email, "ceo@remote.example", f"alice@sub.{DOMAIN}"):
                code, text = client.mail(spoofed)
                assert (code, text[:5]) == (550, b"5.7.1"), spoofed
                client.rset()
            # Case does not make another address.
            assert client.mail(alice.email.upper())[0] == 250

    await asyncio.to_thread(session)


@pytest.mark.parametrize(
    "headers",
    [
        {"From": "Bob Example <bob@example.com>"},
        {"From": "ceo@remote.example"},
        {"From": "alice@example.com, ceo@remote.example"},
        {"From": "alice@example.com <ceo@remote.example>"},
        {"From": "alice@example.com@remote.example"},
        {"Sender": "ceo@remote.example"},
    ],
)
async def test_spoofed_author_field_is_550_at_data_end(
    service: Service, alice: User, bob: User, headers: dict[str, str]
) -> None:
    raw = mail(alice.email, bob.email, headers=headers)

    def session() -> None:
        with logged_in(service, alice.email) as client:
            assert client.mail(alice.email)[0] == 250
            assert client.rcpt(bob.email)[0] == 250
            code, text = client.data(raw)
            assert (code, text[:5]) == (550, b"5.7.1"), text

    await asyncio.to_thread(session)
    assert await bob.messages("inbox") == []
    await nothing_stored(service, alice)


async def test_author_header_hidden_after_a_broken_header_line_is_refused(
    service: Service, alice: User, bob: User
) -> None:
    # A line that is not a header field ends the header section for some
    # readers and not for others; the From after it would show to the latter.
    raw = (
        f"From: {alice.email}\r\nTo: {bob.email}\r\nSubject: hi\r\n"
        "not a header line\r\nFrom: ceo@remote.example\r\n\r\nbody\r\n"
    ).encode()

    def session() -> None:
        with logged_in(service, alice.email) as client:
            client.mail(alice.email)
            client.rcpt(bob.email)
            code, text = client.data(raw)
            assert (code, text[:5]) == (554, b"5.6.0"), text

    await asyncio.to_thread(session)
    await nothing_stored(service, alice)


async def test_missing_from_date_and_message_id_are_added(
    service: Service, alice: User, bob: User
) -> None:
    raw = f"To: {bob.email}\r\nSubject: bare\r\n\r\nhello\r\n".encode()

    def session() -> None:
        with logged_in(service, alice.email) as client:
            assert client.sendmail(alice.email, [bob.email], raw) == {}

    await asyncio.to_thread(session)
    (message,) = await bob.messages("inbox")
    assert message["from"] == {"name": "Alice Example", "email": alice.email}
    stored = (await bob.client.get(f"/v1/messages/{message['id']}/raw")).content
    parsed = message_from_bytes(stored, policy=policy.default)
    assert parsed["Date"] is not None
    assert parsed["Message-ID"].endswith("@localhost>")
    assert stored.endswith(raw)


# -- recipients and limits ---------------------------------------------------------------


async def test_unknown_hosted_recipient_is_550_and_other_domains_are_relayed(
    service: Service, alice: User, bob: User
) -> None:
    def session() -> None:
        with logged_in(service, alice.email) as client:
            client.mail(alice.email)
            code, text = client.rcpt(f"ghost@{DOMAIN}")
            assert (code, text[:5]) == (550, b"5.1.1"), text
            code, text = client.rcpt("not an address")
            assert code in (501, 553), text
            assert client.rcpt(bob.email)[0] == 250
            assert client.rcpt("friend@elsewhere.example")[0] == 250
            assert client.data(mail(alice.email, bob.email))[0] == 250

    await asyncio.to_thread(session)
    assert len(await bob.messages("inbox")) == 1
    (payload,) = await outgoing(service)
    assert payload["recipients"] == ["friend@elsewhere.example"]


async def test_too_many_recipients_is_452(start_service: StartService) -> None:
    service = await start_service({"limits": {"max_recipients": 2}}, roles=ROLES)
    alice = await service.user("alice")

    def session() -> None:
        with logged_in(service, alice.email) as client:
            client.mail(alice.email)
            assert client.rcpt("a@remote.example")[0] == 250
            assert client.rcpt("b@remote.example")[0] == 250
            code, text = client.rcpt("c@remote.example")
            assert (code, text[:5]) == (452, b"4.5.3")
            assert client.data(mail(alice.email, "a@remote.example"))[0] == 250

    await asyncio.to_thread(session)
    (payload,) = await outgoing(service)
    assert payload["recipients"] == ["a@remote.example", "b@remote.example"]


async def test_message_over_the_size_limit_is_552(start_service: StartService) -> None:
    service = await start_service({"limits": {"max_message_bytes": 50_000}}, roles=ROLES)
    alice = await service.user("alice")
    big = mail(alice.email, "a@remote.example", attachment=os.urandom(60_000))

    def session() -> None:
        with logged_in(service, alice.email) as client:
            assert client.esmtp_features["size"] == "50000"
            code, text = client.mail(alice.email, [f"SIZE={len(big)}"])
            assert (code, text[:5]) == (552, b"5.3.4")
            client.rset()
            client.mail(alice.email)
            client.rcpt("a@remote.example")
            code, text = client.data(big)
            assert (code, text[:5]) == (552, b"5.3.4")

    await asyncio.to_thread(session)
    await nothing_stored(service, alice)


async def test_account_send_rate_limit_is_451(start_service: StartService) -> None:
    service = await start_service({"limits": {"send_per_minute": 1}}, roles=ROLES)
    alice = await service.user("alice")

    def session() -> None:
        with logged_in(service, alice.email) as client:
            assert (
                client.sendmail(alice.email, ["a@remote.example"], mail(alice.email, "a@x")) == {}
            )
            client.mail(alice.email)
            client.rcpt("a@remote.example")
            code, text = client.data(mail(alice.email, "a@remote.example"))
            assert (code, text[:5]) == (451, b"4.7.1"), text

    await asyncio.to_thread(session)
    assert len(await alice.messages("sent")) == 1


# -- storage failures and repeats ---------------------------------------------------------


async def test_blob_store_failure_is_451_and_stores_nothing(
    service: Service, alice: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("blob store down")

    monkeypatch.setattr(service.runtime.stores.blobs, "put", broken)

    def session() -> None:
        with logged_in(service, alice.email) as client:
            client.mail(alice.email)
            client.rcpt(bob.email)
            code, text = client.data(mail(alice.email, bob.email))
            assert (code, text[:5]) == (451, b"4.3.0"), text

    await asyncio.to_thread(session)
    monkeypatch.undo()
    assert await bob.messages("inbox") == []
    await nothing_stored(service, alice)


async def test_queue_failure_is_451_and_the_retry_stores_once(
    service: Service, alice: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = service.runtime.stores.queue

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("queue down")

    raw = mail(alice.email, bob.email, cc="far@remote.example")
    recipients = [bob.email, "far@remote.example"]

    def attempt() -> tuple[int, bytes]:
        with logged_in(service, alice.email) as client:
            client.mail(alice.email)
            for recipient in recipients:
                client.rcpt(recipient)
            return client.data(raw)

    monkeypatch.setattr(queue, "put", broken)
    code, text = await asyncio.to_thread(attempt)
    assert (code, text[:5]) == (451, b"4.3.0"), text
    monkeypatch.undo()
    # The client keeps the mail and sends the same bytes again: the copies
    # stored the first time are found, the remote domain is queued once.
    code, text = await asyncio.to_thread(attempt)
    assert code == 250, text
    code, text = await asyncio.to_thread(attempt)
    assert code == 250, text
    assert len(await alice.messages("sent")) == 1
    assert len(await bob.messages("inbox")) == 1
    (payload,) = await outgoing(service)
    assert payload["recipients"] == ["far@remote.example"]
    (sent,) = await alice.messages("sent")
    assert str(payload["message_id"]) == sent["id"]


async def test_same_message_id_with_other_content_is_another_message(
    service: Service, alice: User, bob: User
) -> None:
    first = mail(alice.email, bob.email, subject="one", headers={"Message-ID": "<same@x.example>"})
    second = mail(alice.email, bob.email, subject="two", headers={"Message-ID": "<same@x.example>"})

    def session() -> None:
        with logged_in(service, alice.email) as client:
            assert client.sendmail(alice.email, [bob.email], first) == {}
            assert client.sendmail(alice.email, [bob.email], second) == {}

    await asyncio.to_thread(session)
    assert sorted(m["subject"] for m in await bob.messages("inbox")) == ["one", "two"]


# -- mailfleet serve -----------------------------------------------------------------------


def test_serve_listens_for_submission_where_told(tmp_path: Path, profile: Profile) -> None:
    profile.storage(tmp_path / "data")
    port = free_port()
    http = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailfleet",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            *config_args(tmp_path / "data"),
            "--http",
            f"127.0.0.1:{http}",
            "--smtp",
            f"127.0.0.1:{free_port()}",
            "--submission",
            f"127.0.0.1:{port}",
            "--roles",
            "api,submission",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        while not any("HTTP API" in line for line in lines):
            line = process.stdout.readline()
            assert line, "serve exited: " + "".join(lines)
            lines.append(line)
        assert f"  SMTP submission on 127.0.0.1:{port}\n" in lines
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo(CLIENT)
            assert client.has_extn("starttls")
            cert = tmp_path / "data" / "tls" / "smtp-cert.pem"
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client.starttls(context=context)
            client.ehlo(CLIENT)
            assert "PLAIN" in client.esmtp_features["auth"]
        assert httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()
