"""Mail received over SMTP passes the filter pipeline in worker-in (issue
13): spam goes to Junk, with the verdict, score and reasons in the API and
the filters' headers in the source; ordinary mail goes to the Inbox as ham."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mailfleet.filters.rules import GTUBE
from tests.conftest import Service, User


def send(service: Service, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "Sam Sender <sam@outside.example>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="outside.example")
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", service.smtp_port) as client:
        client.send_message(message, from_addr="sam@outside.example", to_addrs=[to])


async def test_gtube_goes_to_junk_and_an_ordinary_mail_to_the_inbox(
    service: Service, bob: User
) -> None:
    await asyncio.to_thread(send, service, bob.email, "Minutes", "The minutes are attached.\n")
    await asyncio.to_thread(send, service, bob.email, "Test", f"Spam?\n{GTUBE.decode()}\n")
    (junk,) = await bob.wait_for("junk", 1)
    (inbox,) = await bob.wait_for("inbox", 1)
    assert (junk["subject"], inbox["subject"]) == ("Test", "Minutes")

    spam = (await bob.client.get(f"/v1/messages/{junk['id']}")).json()["spam"]
    assert spam["verdict"] == "reject"  # refused if it could have been; Junk once accepted
    assert spam["score"] >= 1000
    assert [r["name"] for r in spam["reasons"]] == ["GTUBE"]
    ham = (await bob.client.get(f"/v1/messages/{inbox['id']}")).json()["spam"]
    assert ham == {"verdict": "ham", "score": 0.0, "reasons": []}

    source = await bob.client.get(f"/v1/messages/{junk['id']}/raw")
    assert source.status_code == 200
    head = source.content.split(b"\r\n\r\n", 1)[0].decode()
    return_path, spam_status = head.split("\r\n")[:2]
    assert return_path == "Return-Path: <sam@outside.example>"
    assert spam_status.startswith("X-Spam-Status: Yes, score=1000")
    assert "X-Spam-Verdict: reject" in head
    assert "X-Spam-Reasons: GTUBE=1000" in head
    assert int(source.headers["content-length"]) == len(source.content)
    assert GTUBE in source.content
