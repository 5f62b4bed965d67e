"""rspamd as a scorer (filters/rspamd.py) against a real rspamd started here
on loopback (tests/support/rspamd.py): GTUBE is a reject, an ordinary mail
is ham, its symbols are the reasons, and an rspamd that is not there makes
the mail wait (FilterUnavailable), never pass unscanned. End to end, a
server configured with ``filters.rspamd_url`` files what rspamd says."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

import pytest

from mailfleet.filters import FilterUnavailable, MailToCheck, Verdict
from mailfleet.filters.rspamd import RspamdFilter
from mailfleet.filters.rules import GTUBE
from tests.conftest import Service, StartService
from tests.support.rspamd import RspamdServer


@pytest.fixture(scope="module")
def rspamd() -> Iterator[RspamdServer]:
    with RspamdServer() as server:
        yield server


def raw_mail(body: str, subject: str = "Lunch tomorrow") -> bytes:
    return (
        "From: Ann Example <ann@example.org>\r\n"
        "To: Bob Example <bob@example.com>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain='example.org')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


ORDINARY = (
    "Shall we meet at noon by the fountain? I will bring the quarterly report\r\n"
    "and the notes from Tuesday's meeting.\r\n\r\nAnn"
)


def inbound(raw: bytes) -> MailToCheck:
    return MailToCheck(
        raw=raw,
        mail_from="ann@example.org",
        recipients=("bob@example.com",),
        direction="in",
        client_ip="127.0.0.1",
        helo="localhost",
    )


async def test_gtube_is_a_reject_and_says_why(rspamd: RspamdServer) -> None:
    scorer = RspamdFilter(rspamd.url)
    try:
        result = await scorer.check(inbound(raw_mail(f"Test\r\n{GTUBE.decode()}")))
    finally:
        await scorer.close()
    assert result.verdict == Verdict.REJECT
    assert result.score == 0  # rspamd's points are its own: its action is the verdict
    summary, *symbols = result.reasons
    assert summary.name == "RSPAMD"
    assert summary.detail.startswith("score 15 of 15, action reject"), summary
    assert "GTUBE" in [r.name for r in symbols]


async def test_an_ordinary_mail_is_ham(rspamd: RspamdServer) -> None:
    scorer = RspamdFilter(rspamd.url)
    try:
        result = await scorer.check(inbound(raw_mail(ORDINARY)))
    finally:
        await scorer.close()
    assert result.verdict is None, result
    assert result.score == 0
    assert result.reasons[0].name == "RSPAMD"
    assert "action no action" in result.reasons[0].detail or "greylist" in result.reasons[0].detail


async def test_an_rspamd_that_is_not_there_makes_the_mail_wait() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        scorer = RspamdFilter(f"http://127.0.0.1:{port}", timeout=2)
        try:
            with pytest.raises(FilterUnavailable, match="rspamd"):
                await scorer.check(inbound(raw_mail(ORDINARY)))
        finally:
            await scorer.close()


def send(service: Service, to: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp_port) as client:
        client.sendmail("ann@example.org", [to], raw)


async def test_a_server_with_rspamd_files_what_it_says(
    start_service: StartService, rspamd: RspamdServer
) -> None:
    # The built-in rules off: what is filed here is rspamd's doing alone.
    service = await start_service({"filters": {"builtin_rules": False, "rspamd_url": rspamd.url}})
    bob = await service.user("bob")
    await asyncio.to_thread(send, service, bob.email, raw_mail(ORDINARY))
    await asyncio.to_thread(send, service, bob.email, raw_mail(GTUBE.decode(), "Test"))
    (junk,) = await bob.wait_for("junk", 1)
    (inbox,) = await bob.wait_for("inbox", 1)
    assert (junk["subject"], inbox["subject"]) == ("Test", "Lunch tomorrow")
    spam = (await bob.client.get(f"/v1/messages/{junk['id']}")).json()["spam"]
    assert spam["verdict"] == "reject"
    assert "GTUBE" in [r["name"] for r in spam["reasons"]]
    ham = (await bob.client.get(f"/v1/messages/{inbox['id']}")).json()["spam"]
    assert ham["verdict"] == "ham"
