"""The XSS corpus (tests/webmail/xss_payloads.txt) in a real browser: every
payload arrives over SMTP as its own HTML mail, replies in conversations of
25 (what the reader fetches at once), which the webmail opens with every
(unread) message expanded in its own sandboxed frame. No script runs anywhere: the canary
``window.__pwned`` is set neither in the page nor in any mail's frame, no
dialog opens, nothing navigates or opens a window, the attacker's server on
loopback is asked for nothing, and the console shows no error (a CSP or
sandbox refusal is one: the sanitizer must remove what they would block)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from urllib.parse import urlsplit

import aiosmtplib
import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from tests.support.xss import CANARY, payloads
from tests.webmail.conftest import Webmail, expect
from tests.webmail.test_html_mail import CountingServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def attacker() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.stop()


PER_THREAD = 25


def threads_of_payloads(to: str, url: str) -> list[list[EmailMessage]]:
    threads: list[list[EmailMessage]] = []
    for n, payload in enumerate(payloads()):
        t, first = divmod(n, PER_THREAD)
        if not first:
            threads.append([])
        mail = EmailMessage()
        mail["From"] = "Mallory <mallory@attacker.test>"
        mail["To"] = to
        mail["Subject"] = f"{'Re: ' if first else ''}Hostile thread {t}"
        mail["Message-ID"] = f"<xss-{n}@attacker.test>"
        if first:
            root = f"<xss-{t * PER_THREAD}@attacker.test>"
            mail["In-Reply-To"] = root
            mail["References"] = root
        mail.set_content(f"payload {n}")
        mail.add_alternative(f"<p>payload {n}</p>{payload.html(url)}", subtype="html")
        threads[-1].append(mail)
    return threads


FRAME_STATE = f"""() => ({{
  text: document.body ? document.body.innerText : '',
  canary: typeof window.{CANARY},
  forms: document.forms.length,
}})"""


async def settled_frames(page: Page, count: int) -> list[str]:
    """The first line of each mail frame once ``count`` of them are shown,
    after checking each for the canary and forms. The reader rebuilds its
    frames while the conversation's read flags come back as live updates: a
    frame may go away while it is looked at, and then it is looked at again."""
    for _ in range(100):
        states = []
        for frame in page.frames:
            if frame.url != "about:srcdoc" or frame.is_detached():
                continue
            with contextlib.suppress(PlaywrightError):  # replaced meanwhile
                states.append(await frame.evaluate(FRAME_STATE))
        for state in states:
            assert state["canary"] == "undefined", state
            assert state["forms"] == 0, state
        lines = [state["text"].split("\n", 1)[0] for state in states]
        if len(lines) == count and all(line.startswith("payload ") for line in lines):
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"the frames never settled: {lines}")


async def test_no_payload_of_the_corpus_runs_in_the_webmail(
    webmail: Webmail, attacker: CountingServer
) -> None:
    victim = await webmail.user("victim")
    url = f"http://127.0.0.1:{attacker.port}"
    threads = threads_of_payloads(victim.email, url)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=webmail.service.smtp_port, start_tls=False)
    async with smtp:
        for thread in threads:
            for mail in thread:
                await smtp.send_message(mail)

    # As a tab in the background: the reader leaves what it shows unread
    # (reader.js, markRead), so the 25 read flags do not come back as live
    # updates that rebuild all 25 frames each (which takes seconds a time).
    context = await webmail.context()
    await context.add_init_script(
        "Object.defineProperty(Document.prototype, 'visibilityState', {get: () => 'hidden'});"
    )
    page = await webmail.open(victim, context)
    dialogs: list[str] = []
    popups: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    page.context.on("page", lambda p: popups.append(p.url))
    start_url = page.url

    for t, thread in enumerate(threads):
        row = page.locator("#messages .row", has_text=f"Hostile thread {t}")
        await expect(row).to_contain_text(str(len(thread)), timeout=20_000)  # all of it is in
        await row.locator(".row-link").click()
        shown = await settled_frames(page, len(thread))
        assert sorted(shown) == sorted(
            f"payload {n}" for n in range(t * PER_THREAD, t * PER_THREAD + len(thread))
        )
        # Timers in a payload (a meta refresh of 0 s, an SVG animation that
        # begins at once) fire well within this.
        await page.wait_for_timeout(300)
        assert await settled_frames(page, len(thread)) == shown
        assert await page.evaluate(f"typeof window.{CANARY}") == "undefined"
        assert urlsplit(page.url)[:3] == urlsplit(start_url)[:3]  # the route (#...) changes
        assert dialogs == [] and popups == []
        assert attacker.requests == []
