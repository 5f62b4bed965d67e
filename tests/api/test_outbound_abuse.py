"""Outbound abuse (issue 13, delivery/abuse.py), as users and administrators
see it over HTTP, SMTP submission and the CLI: a send the filters judge
spam counts against the account (a ``reject`` is refused, a ``spam`` goes
out, in Junk for a hosted recipient); enough of them throttle, then hold the
account; so does hammering the send rate limit; a held account's sends are
refused with the reason until an administrator releases it."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path
from typing import Any

from mailfleet.filters.rules import GTUBE
from tests.conftest import PASSWORD, Service, StartService, User
from tests.test_restart import run_cli

OUTSIDE = "carol@example.org"


def limits(**values: Any) -> dict[str, Any]:
    base = {"send_per_minute": 10_000, "send_per_day": 100_000}
    return {"limits": {**base, **values}}


async def post(user: User, **body: Any) -> Any:
    body.setdefault("subject", "Hello")
    body.setdefault("body", "An ordinary note.")
    return await user.client.post("/v1/messages", json=body)


async def test_spam_is_refused_counted_then_the_account_is_held_until_released(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service(limits(spam_sends_before_throttle=5, spam_sends_before_hold=3))
    alice = await service.user("alice")
    for _ in range(3):
        refused = await post(alice, to=[OUTSIDE], subject="Test", body=f"x {GTUBE.decode()} x")
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "spam_refused"
        assert "GTUBE" in error["message"]
    assert await alice.messages("sent") == []  # nothing stored, nothing queued

    held = await post(alice, to=[OUTSIDE])
    assert held.status_code == 403, held.text
    error = held.json()["error"]
    assert error["code"] == "account_held"
    assert "3 mails scored as spam within an hour (last: GTUBE)" in error["message"]
    # Reading goes on.
    assert (await alice.client.get("/v1/folders")).status_code == 200

    listing = run_cli(tmp_path / "data", "user", "list")
    assert listing.returncode == 0, listing.stderr
    (line,) = [x for x in listing.stdout.splitlines() if x.startswith(alice.email)]
    assert "sending held since" in line and "3 mails scored as spam" in line

    released = run_cli(tmp_path / "data", "user", "release", alice.email)
    assert released.returncode == 0, released.stderr
    assert "may send again" in released.stdout
    assert (await post(alice, to=[OUTSIDE])).status_code == 202
    # The strikes that held it are forgotten with the release.
    again = await post(alice, to=[OUTSIDE], subject="Test", body=GTUBE.decode())
    assert again.status_code == 422
    assert (await post(alice, to=[OUTSIDE])).status_code == 202


async def test_spam_to_a_hosted_user_goes_to_junk_and_throttles_the_sender(
    start_service: StartService,
) -> None:
    # A low spam score: one built-in rule (a shouting subject) makes spam.
    service = await start_service(
        {
            **limits(
                spam_sends_before_throttle=1,
                throttled_sends_per_hour=2,
                spam_sends_before_hold=100,
            ),
            "filters": {"spam_score": 1.0},
        }
    )
    alice, bob = await service.user("alice"), await service.user("bob")
    sent = await post(alice, to=[bob.email], subject="BUY NOW LIMITED OFFER")
    assert sent.status_code == 202, sent.text
    (junk,) = await bob.wait_for("junk", 1)
    assert await bob.messages("inbox") == []
    spam = (await bob.client.get(f"/v1/messages/{junk['id']}")).json()["spam"]
    assert spam["verdict"] == "spam"
    assert "SUBJ_ALL_CAPS" in [r["name"] for r in spam["reasons"]]
    # The sender's own copy is not judged.
    (mine,) = await alice.messages("sent")
    mine_spam = (await alice.client.get(f"/v1/messages/{mine['id']}")).json()["spam"]
    assert (mine_spam["verdict"], mine_spam["reasons"]) == (None, [])

    # Throttled: two sends an hour from here on, ordinary ones included.
    assert (await post(alice, to=[bob.email])).status_code == 202
    assert (await post(alice, to=[bob.email])).status_code == 202
    throttled = await post(alice, to=[bob.email])
    assert throttled.status_code == 429, throttled.text
    assert int(throttled.headers["retry-after"]) > 0
    # Bob, who sent nothing spammy, is not throttled.
    assert (await post(bob, to=[alice.email])).status_code == 202


async def test_hammering_the_send_rate_limit_holds_the_account(
    start_service: StartService,
) -> None:
    service = await start_service(limits(send_per_minute=1, rate_limited_sends_before_hold=2))
    alice = await service.user("alice")
    assert (await post(alice, to=[OUTSIDE])).status_code == 202
    for _ in range(2):
        assert (await post(alice, to=[OUTSIDE])).status_code == 429
    held = await post(alice, to=[OUTSIDE])
    assert held.status_code == 403
    assert "sent too much too fast: 2 sends over the rate limit" in held.json()["error"]["message"]


def submit(service: Service, user: User, raw: bytes) -> tuple[int, bytes]:
    """What submission answers to one mail from ``user`` (MAIL FROM's
    refusal, else DATA's), after STARTTLS and AUTH as a mail client does."""
    host, port = service.server.submission_address
    cert = Path(service.runtime.settings.data_dir) / "tls" / "smtp-cert.pem"
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the certificate names "localhost"; we dial 127.0.0.1
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.starttls(context=context)
        client.login(user.email, PASSWORD)
        code, reply = client.mail(user.email)
        if code != 250:
            return code, reply
        assert client.rcpt(OUTSIDE)[0] == 250
        return client.data(raw)


async def test_submission_refuses_spam_and_a_held_account(service: Service, tmp_path: Path) -> None:
    alice = await service.user("alice")
    raw = (
        f"From: <{alice.email}>\r\nTo: <{OUTSIDE}>\r\nSubject: Test\r\n\r\n{GTUBE.decode()}\r\n"
    ).encode()
    code, reply = await asyncio.to_thread(submit, service, alice, raw)
    assert (code, reply[:6]) == (554, b"5.7.1 ")
    assert b"reads as spam" in reply and b"GTUBE" in reply

    held = run_cli(tmp_path / "data", "user", "hold", alice.email, "--reason", "phishing reports")
    assert held.returncode == 0, held.stderr
    ordinary = f"From: <{alice.email}>\r\nTo: <{OUTSIDE}>\r\nSubject: Hi\r\n\r\nHello\r\n"
    code, reply = await asyncio.to_thread(submit, service, alice, ordinary.encode())
    assert (code, reply[:6]) == (550, b"5.7.1 ")
    assert b"held for review: phishing reports" in reply
    again = run_cli(tmp_path / "data", "user", "hold", alice.email, "--reason", "another")
    assert "already held: phishing reports" in again.stdout
