"""New mail shows up without a reload: from another user through the API,
over SMTP, by long poll when WebSockets are blocked, and after an offline
spell (every mail once)."""

from __future__ import annotations

import asyncio
import os
import re
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from playwright.async_api import Page, WebSocketRoute

from tests.webmail.conftest import Link, Webmail, expect, screenshot_path

pytestmark = pytest.mark.asyncio(loop_scope="module")


def inbox_count(page: Page) -> object:
    return page.locator("#folders [data-role=inbox] .count")


def rows(page: Page, text: str | None = None) -> object:
    found = page.locator("#messages .row")
    return found.filter(has_text=text) if text else found


async def test_send_with_attachment_read_download_reply_all_live(webmail: Webmail) -> None:
    alice = await webmail.user("alice", "Alice Example")
    bob = await webmail.user("bob", "Bob Example")
    a = await webmail.open(alice)
    b = await webmail.open(bob)
    await expect(b.locator("body")).to_have_attribute("data-live", "live")

    # Alice writes with an attachment (upload progress, then sent).
    await a.locator("#compose-button").click()
    await a.get_by_label("To", exact=True).fill(bob.email)
    await a.get_by_label("Subject").fill("Quarterly plan")
    await a.get_by_label("Message", exact=True).fill("Hi Bob,\nthe plan is attached.")
    # Random bytes could start with "MZ", a program to the attachment policy.
    payload = b"\0" + os.urandom(300_000)
    await a.locator("#compose-files").set_input_files(
        files=[{"name": "plan.bin", "mimeType": "application/octet-stream", "buffer": payload}]
    )
    await expect(a.locator(".upload[data-state=done]")).to_have_count(1)
    await a.screenshot(path=screenshot_path("compose"))
    await a.get_by_role("button", name="Send", exact=True).click()
    await expect(a.locator("#compose-dialog")).not_to_be_visible()

    # Bob's open Inbox shows it within 2 s, unread count and title go up.
    row = rows(b, "Quarterly plan")
    await expect(row).to_be_visible(timeout=2000)
    await expect(row).to_have_class(re.compile(r"\bunread\b"))
    await expect(inbox_count(b)).to_have_text("1 unread")
    await expect(b).to_have_title(re.compile(r"^\(1\) Inbox"))
    await expect(row.locator(".row-marks")).to_contain_text("has attachments")

    # Alice keeps the conversation open (from Sent) to see the answer arrive.
    await a.get_by_role("treeitem", name=re.compile("^Sent")).click()
    await rows(a, "Quarterly plan").locator(".row-link").click()
    await expect(a.locator(".thread .msg")).to_have_count(1)

    # Bob opens it: read, count gone; downloads the attachment byte for byte.
    await row.locator(".row-link").click()
    await expect(b.locator(".msg.expanded .text-body")).to_contain_text("the plan is attached")
    await expect(inbox_count(b)).to_have_count(0)
    await expect(row).not_to_have_class(re.compile(r"\bunread\b"))
    async with b.expect_download() as info:
        await b.get_by_role("button", name="Download plan.bin").click()
    download = await info.value
    assert download.suggested_filename == "plan.bin"
    saved = Path(await download.path())
    assert await asyncio.to_thread(saved.read_bytes) == payload

    # Bob replies; Alice sees it inside the same conversation, live.
    await b.locator(".msg.expanded").get_by_role("button", name="Reply", exact=True).click()
    await expect(b.get_by_label("To", exact=True)).to_have_value(re.compile(re.escape(alice.email)))
    await expect(b.get_by_label("Subject")).to_have_value("Re: Quarterly plan")
    body = b.get_by_label("Message", exact=True)
    await expect(body).to_have_value(re.compile(r"> the plan is attached"))
    await body.press("Control+Home")
    await body.type("Thanks, looks good.")
    await b.get_by_role("button", name="Send", exact=True).click()
    await expect(b.locator("#compose-dialog")).not_to_be_visible()
    # Bob's own reply shows in his conversation too.
    await expect(b.locator(".thread .msg")).to_have_count(2)

    await expect(a.locator(".thread .msg")).to_have_count(2, timeout=2000)
    await expect(a.locator(".thread .msg").last).to_contain_text("Thanks, looks good.")
    # Shown in the open conversation, so read there (as in Gmail).
    await expect(inbox_count(a)).to_have_count(0)
    await a.locator(".thread .msg").last.locator(".msg-toggle").focus()
    await a.screenshot(path=screenshot_path("conversation"))
    # In Alice's Inbox the reply is one conversation of two messages.
    await a.get_by_role("treeitem", name=re.compile("^Inbox")).click()
    await expect(rows(a, "Quarterly plan").locator(".row-count")).to_have_text(" 2")


async def test_mail_over_smtp_appears_live(webmail: Webmail) -> None:
    carol = await webmail.user("carol", "Carol")
    page = await webmail.open(carol)
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    mail = EmailMessage()
    mail["From"] = "Dave Remote <dave@remote.test>"
    mail["To"] = carol.email
    mail["Subject"] = "Hello over SMTP"
    mail.set_content("Sent through the MX port.")
    await aiosmtplib.send(
        mail, hostname="127.0.0.1", port=webmail.service.smtp_port, start_tls=False
    )
    row = rows(page, "Hello over SMTP")
    await expect(row).to_be_visible(timeout=3000)
    await expect(row).to_contain_text("Dave Remote")
    await expect(inbox_count(page)).to_have_text("1 unread")


async def test_long_poll_when_websocket_is_blocked(webmail: Webmail) -> None:
    erin = await webmail.user("erin")
    frank = await webmail.user("frank")
    context = await webmail.context()

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close(code=1011, reason="blocked by the test")

    await context.route_web_socket(re.compile(r".*/v1/events/ws.*"), refuse)
    page = await webmail.open(erin, context)
    await expect(page.locator("body")).to_have_attribute("data-live", "polling")
    await expect(page.locator("#live-status")).to_have_text("Live (polling)")
    await frank.send(to=[erin.email], subject="Polled in")
    await expect(rows(page, "Polled in")).to_be_visible(timeout=2000)
    await expect(inbox_count(page)).to_have_text("1 unread")


async def test_offline_then_back_catches_up_once(webmail: Webmail) -> None:
    gina = await webmail.user("gina")
    hank = await webmail.user("hank")
    context = await webmail.context()
    link = Link(context)
    await link.install()
    page = await webmail.open(gina, context)
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    await link.cut()
    await expect(page.locator("body")).to_have_attribute("data-live", "offline")
    for n in range(3):
        await hank.send(to=[gina.email], subject=f"While away {n}")
    await page.wait_for_timeout(300)
    await expect(rows(page)).to_have_count(0)  # really away: nothing came in
    await link.restore()
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    for n in range(3):
        await expect(rows(page, f"While away {n}")).to_have_count(1, timeout=5000)
    await expect(rows(page)).to_have_count(3)
    await expect(inbox_count(page)).to_have_text("3 unread")
    # Nothing doubled later either (a late replay would add rows).
    await page.wait_for_timeout(300)
    await expect(rows(page)).to_have_count(3)


async def test_a_long_unread_conversation_opens_with_each_message_fetched_once(
    webmail: Webmail,
) -> None:
    # Opening marks every message read; each flag comes back as a live
    # update, and the reader used to fetch every body again for each of them.
    ivy = await webmail.user("ivy", "Ivy")
    page = await webmail.open(ivy)
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    count = 15

    def mail(n: int, subject: str, root: str | None) -> EmailMessage:
        message = EmailMessage()
        message["From"] = "Jon Remote <jon@remote.test>"
        message["To"] = ivy.email
        message["Subject"] = subject
        message["Message-ID"] = f"<{subject.split()[-1]}-{n}@remote.test>"
        if root:
            message["In-Reply-To"] = message["References"] = root
        message.set_content(f"part {n}")
        return message

    for n in range(count):
        root = "<conversation-0@remote.test>" if n else None
        await aiosmtplib.send(
            mail(n, f"{'Re: ' if n else ''}Long conversation", root),
            hostname="127.0.0.1",
            port=webmail.service.smtp_port,
            start_tls=False,
        )
    await expect(inbox_count(page)).to_have_text(f"{count} unread", timeout=5000)

    fetched: list[str] = []
    page.on(
        "request",
        lambda r: (
            fetched.append(r.url)
            if r.method == "GET" and re.search(r"/v1/messages/\d+$", r.url)
            else None
        ),
    )
    await rows(page, "Long conversation").click()
    await expect(page.locator("#reader-body .msg")).to_have_count(count)
    await expect(inbox_count(page)).to_have_count(0)  # all read
    # Live updates come in order: once a later mail is listed, the read
    # flags' updates before it have been handled.
    await aiosmtplib.send(
        mail(0, "Afterwards", None),
        hostname="127.0.0.1",
        port=webmail.service.smtp_port,
        start_tls=False,
    )
    await expect(rows(page, "Afterwards")).to_be_visible(timeout=5000)
    assert len(fetched) == count, fetched
    assert len(set(fetched)) == count
