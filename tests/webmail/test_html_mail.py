"""HTML mail is shown only in a sandboxed frame: no script of a mail runs
(script elements, event handlers, javascript: links), forms are gone, and a
remote image is fetched only once the reader allows it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import pytest
import pytest_asyncio

from tests.webmail.conftest import Webmail, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478"
    "9c6360000002000105fe02fea70000000049454e44ae426082"
)


class CountingServer:
    """A loopback HTTP server that counts what it is asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: no-store\r\n"
            b"Content-Length: " + str(len(PIXEL)).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        writer.write(PIXEL)
        await writer.drain()
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture(loop_scope="module")
async def tracker() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.stop()


def hostile_html(port: int) -> str:
    return f"""<html><head><style>body {{ background: url(http://127.0.0.1:{port}/bg.png) }}</style>
<script>window.top.pwned = 'script';</script></head>
<body><p id="hello">Hello <b>from HTML</b></p>
<script>window.pwned = 'inline'; window.parent.pwned = 'inline';</script>
<img src="x" onerror="window.pwned = 'onerror'; document.body.dataset.pwned = 'onerror'">
<p><a href="javascript:window.pwned='link';window.top.pwned='link'">click me</a>
   <a href="https://example.org/">a real link</a></p>
<form action="http://127.0.0.1:{port}/steal" method="post"><input name="q" value="secret">
<button type="submit">Go</button></form>
<img src="http://127.0.0.1:{port}/pixel.png" alt="tracker" width="10" height="10">
</body></html>"""


async def deliver(webmail: Webmail, to: str, subject: str, html: str) -> None:
    mail = EmailMessage()
    mail["From"] = "Mallory Marketing <mallory@promo.test>"
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content("Plain version.")
    mail.add_alternative(html, subtype="html")
    await aiosmtplib.send(
        mail, hostname="127.0.0.1", port=webmail.service.smtp_port, start_tls=False
    )


async def test_hostile_html_mail_runs_nothing_and_images_wait(
    webmail: Webmail, tracker: CountingServer
) -> None:
    nina = await webmail.user("nina")
    page = await webmail.open(nina)
    await deliver(webmail, nina.email, "Big offer", hostile_html(tracker.port))
    await page.locator("#messages .row", has_text="Big offer").locator(".row-link").click()

    frame_el = page.locator("iframe.mail-frame")
    await expect(frame_el).to_be_visible()
    sandbox = await frame_el.get_attribute("sandbox") or ""
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    frame = page.frame_locator("iframe.mail-frame")
    await expect(frame.locator("#hello, p").first).to_contain_text("Hello from HTML")
    await expect(frame.locator("form")).to_have_count(0)
    await expect(frame.locator("script")).to_have_count(0)
    await expect(frame.locator("a", has_text="click me")).not_to_have_attribute(
        "href", re.compile("javascript", re.I)
    )
    await frame.locator("a", has_text="click me").click()
    await page.wait_for_timeout(300)
    # Neither in the page nor in the mail's own frame did anything run.
    assert await page.evaluate("window.pwned") is None
    mail_frame = next(f for f in page.frames if f.url == "about:srcdoc")
    assert await mail_frame.evaluate("window.pwned") is None
    assert await mail_frame.evaluate("document.body.dataset.pwned") is None
    assert tracker.requests == []  # the tracking pixel was not fetched

    banner = page.locator(".images-banner")
    await expect(banner).to_contain_text("Remote images are hidden")
    await banner.get_by_role("button", name="Show images").click()
    await expect(banner).to_have_count(0)
    for _ in range(50):
        if tracker.requests:
            break
        await asyncio.sleep(0.05)
    assert any("/pixel.png" in r for r in tracker.requests), tracker.requests
    assert not any("/steal" in r or "/bg.png" in r for r in tracker.requests)
    assert await page.evaluate("window.pwned") is None

    # "Always from this sender": the next mail from Mallory shows images at once.
    await deliver(webmail, nina.email, "Second offer", hostile_html(tracker.port))
    seen = len(tracker.requests)
    await page.get_by_role("treeitem", name=re.compile("^Inbox")).click()
    await page.locator("#messages .row", has_text="Second offer").locator(".row-link").click()
    await expect(page.locator(".images-banner")).to_be_visible()
    await page.get_by_role("button", name="Always show from mallory@promo.test").click()
    for _ in range(50):
        if len(tracker.requests) > seen:
            break
        await asyncio.sleep(0.05)
    assert len(tracker.requests) > seen
    assert await page.evaluate("window.pwned") is None
