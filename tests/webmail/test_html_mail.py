"""HTML mail is shown only in a sandboxed frame: no script of a mail runs
(script elements, event handlers, javascript: links), forms are gone, and a
remote image is fetched only once the reader allows it. Images the mail
carries itself (cid:) show at once, within caps, and are not remote."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import zlib
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator

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


def html_mail(sender: str, to: str, subject: str, html: str) -> EmailMessage:
    """A plain and an HTML alternative, as mail clients send them."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content("Plain version.")
    mail.add_alternative(html, subtype="html")
    return mail


async def send_over_smtp(webmail: Webmail, mail: EmailMessage) -> None:
    await aiosmtplib.send(
        mail, hostname="127.0.0.1", port=webmail.service.smtp_port, start_tls=False
    )


async def deliver(webmail: Webmail, to: str, subject: str, html: str) -> None:
    await send_over_smtp(
        webmail, html_mail("Mallory Marketing <mallory@promo.test>", to, subject, html)
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


def png(width: int, height: int, noise: bool = False) -> bytes:
    """A PNG of this size (the size tells the rendered image apart): red, or
    random pixels, which do not compress, for a big file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def row() -> bytes:
        return b"\x00" + (os.urandom(3 * width) if noise else b"\xff\x00\x00" * width)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(row() for _ in range(height)), 1)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def deliver_related(
    webmail: Webmail, to: str, subject: str, html: str, images: dict[str, bytes]
) -> None:
    """HTML with its images as multipart/related parts (Content-ID = the
    key, as mail clients send signatures and pasted screenshots), and a PDF
    attached as a file."""
    mail = html_mail("Sam Signature <sam@outside.test>", to, subject, html)
    html_part = mail.get_body(("html",))
    assert html_part is not None
    for cid, data in images.items():
        name = f"{cid.split('@')[0]}.png"
        html_part.add_related(data, maintype="image", subtype="png", cid=f"<{cid}>", filename=name)
    mail.add_attachment(
        b"%PDF-1.4\n%%EOF\n", maintype="application", subtype="pdf", filename="terms.pdf"
    )
    await send_over_smtp(webmail, mail)


IMAGE_SIZE = "i => i.complete ? [i.naturalWidth, i.naturalHeight] : null"


async def settles(locator: Locator, script: str, expected: object, all_: bool = False) -> object:
    """What ``script`` finds in the mail frame once it is ``expected`` (or
    after 5 s): the reader refills the frame when the images arrive and
    rebuilds it on a live update, so a look may catch a half-parsed one."""
    found: object = None
    for _ in range(100):
        try:
            found = await (locator.evaluate_all(script) if all_ else locator.evaluate(script))
        except PlaywrightError:
            found = None  # the frame was being replaced
        if found == expected:
            break
        await asyncio.sleep(0.05)
    return found


async def test_cid_images_show_at_once_and_remote_ones_still_wait(
    webmail: Webmail, tracker: CountingServer
) -> None:
    olga = await webmail.user("olga")
    page = await webmail.open(olga)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/attachments/" in r.url else None)
    html = (
        '<p>Regards,</p><img src="cid:logo.1@mail.test" alt="logo">'
        f'<img src="http://127.0.0.1:{tracker.port}/remote.png" alt="remote">'
    )
    await deliver_related(webmail, olga.email, "Logo inside", html, {"logo.1@mail.test": png(7, 5)})
    await page.locator("#messages .row", has_text="Logo inside").locator(".row-link").click()

    frame = page.frame_locator("iframe.mail-frame")
    await expect(frame.locator("p")).to_contain_text("Regards")
    logo = frame.locator("img[alt=logo]")
    await expect(logo).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert await settles(logo, IMAGE_SIZE, [7, 5]) == [7, 5]  # decoded and drawn in the frame

    # The remote image is still held back, and the prompt is for it alone.
    await expect(frame.locator("img[alt=remote]")).not_to_have_attribute("src", re.compile("."))
    await expect(page.locator(".images-banner")).to_be_visible()
    assert tracker.requests == []
    # The logo is in the body, not in the attachment list; the PDF is listed.
    await expect(page.locator(".attachments .att-name")).to_have_text(["terms.pdf"])
    assert len(fetched) == 1

    await page.locator(".images-banner").get_by_role("button", name="Show images").click()
    for _ in range(50):
        if tracker.requests:
            break
        await asyncio.sleep(0.05)
    assert tracker.requests == ["GET /remote.png HTTP/1.1"]
    # The rebuilt frame shows the logo again without fetching it again.
    logo = page.frame_locator("iframe.mail-frame").locator("img[alt=logo]")
    await expect(logo).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert await settles(logo, IMAGE_SIZE, [7, 5]) == [7, 5]
    assert len(fetched) == 1


async def test_cid_images_past_the_caps_stay_attachments(webmail: Webmail) -> None:
    # A part over 5 MB, and more than 50 parts: the reader inlines only what
    # is within the caps; the rest stays an attachment the user may open.
    pia = await webmail.user("pia")
    page = await webmail.open(pia)
    big = png(1400, 1400, noise=True)
    assert len(big) > 5 * 1024 * 1024
    images = {"big@mail.test": big} | {f"s{n:02d}@mail.test": png(2, 3) for n in range(55)}
    html = "".join(f'<img src="cid:{cid}" alt="{cid}">' for cid in images)
    await deliver_related(webmail, pia.email, "Many pictures", html, images)
    await page.locator("#messages .row", has_text="Many pictures").locator(".row-link").click()

    inlined = page.frame_locator("iframe.mail-frame").locator("img[src^='data:image/png']")
    expected = [f"s{n:02d}@mail.test" for n in range(50)]
    alts = "imgs => imgs.map(i => i.alt)"
    assert await settles(inlined, alts, expected, all_=True) == expected
    listed = ["big.png"] + [f"s{n:02d}.png" for n in range(50, 55)] + ["terms.pdf"]
    await expect(page.locator(".attachments .att-name")).to_have_text(listed)
