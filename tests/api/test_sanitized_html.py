"""Every known sanitizer bypass of the corpus (tests/webmail/xss_payloads.txt),
each delivered over SMTP as the HTML part of its own mail: the ``html`` the
API gives back holds no script, event handler, javascript:/vbscript:/data:
URL, frame, form, style, SVG or MathML, nothing that loads or navigates.
(What a browser makes of it: tests/webmail/test_xss.py.)"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from tests.conftest import Service, User
from tests.support.xss import payloads, problems

ATTACKER = "http://127.0.0.1:9"


def hostile_mail(to: str, n: int, html: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Mallory <mallory@attacker.test>"
    mail["To"] = to
    mail["Subject"] = f"xss {n}"
    mail.set_content("Plain version.")
    mail.add_alternative(f"<p>payload {n}</p>{html}", subtype="html")
    return mail


async def inbox(user: User, count: int) -> list[dict[str, Any]]:
    folder = await user.folder("inbox")
    async with asyncio.timeout(20):
        while True:
            page = await user.client.get(f"/v1/folders/{folder['id']}/messages?limit=200")
            items: list[dict[str, Any]] = page.json()["items"]
            if len(items) >= count:
                return items
            await asyncio.sleep(0.05)


async def test_no_payload_of_the_corpus_survives_sanitizing(service: Service, alice: User) -> None:
    corpus = payloads()
    assert len(corpus) >= 60
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.smtp_port, start_tls=False)
    async with smtp:
        for n, payload in enumerate(corpus):
            await smtp.send_message(hostile_mail(alice.email, n, payload.html(ATTACKER)))
    by_subject = {m["subject"]: m["id"] for m in await inbox(alice, len(corpus))}

    failures = {}
    for n, payload in enumerate(corpus):
        message = (await alice.client.get(f"/v1/messages/{by_subject[f'xss {n}']}")).json()
        html = message["html"]
        assert html is not None and f"payload {n}" in html, (payload.name, html)
        found = problems(html)
        if found:
            failures[payload.name] = (found, html)
    assert not failures, failures


def test_the_checker_finds_what_it_must() -> None:
    # The check itself, on unsanitized payloads: each one is flagged.
    missed = [p.name for p in payloads() if not problems(p.html(ATTACKER))]
    assert missed == [], missed
