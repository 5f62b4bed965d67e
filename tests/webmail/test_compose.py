"""Compose: address completion, drag and drop, the size limit said before
upload, drafts that survive a reload, reply all and forward, delivery status
per recipient on sent mail, image previews, notifications, sign-out."""

from __future__ import annotations

import re
import time

import pytest

from mailfleet.storage.interfaces import Delivery
from tests.webmail.conftest import PASSWORD, Webmail, expect
from tests.webmail.test_html_mail import PIXEL

pytestmark = pytest.mark.asyncio(loop_scope="module")

DROP = """async ([name, size]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(size).fill(65)], name, {type: 'text/plain'}));
  const dialog = document.querySelector('#compose-dialog');
  const init = {dataTransfer: data, bubbles: true, cancelable: true};
  dialog.dispatchEvent(new DragEvent('dragenter', init));
  dialog.dispatchEvent(new DragEvent('drop', init));
}"""


async def test_completion_drop_limit_and_drafts(webmail: Webmail) -> None:
    sam = await webmail.user("sam", "Sam Writer")
    tess = await webmail.user("tess", "Tess Correspondent")
    await tess.send(to=[sam.email], subject="Hello Sam", body="hi")
    page = await webmail.open(sam)
    await page.keyboard.press("c")
    to = page.get_by_label("To", exact=True)
    await to.type("tes")
    option = page.get_by_role("option", name=re.compile("Tess Correspondent"))
    await expect(option).to_be_visible()
    await to.press("Enter")
    await expect(to).to_have_value(f"Tess Correspondent <{tess.email}>, ")

    await expect(page.locator("#compose-limit")).to_contain_text("Up to 25 MB per file")
    await page.evaluate(DROP, ["dropped.txt", 2048])
    await expect(page.locator(".upload[data-state=done]")).to_contain_text("dropped.txt")
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if "/v1/attachments" in r.url else None)
    await page.evaluate(DROP, ["huge.bin", 26 * 1024 * 1024])
    refused = page.locator(".upload[data-state=refused]")
    await expect(refused).to_contain_text("over the 25 MB limit")
    assert uploads == []  # refused before a byte was sent

    await page.get_by_label("Subject").fill("Kept across a reload")
    await page.get_by_label("Message", exact=True).fill("Half-written thoughts.")
    await page.wait_for_timeout(500)  # the draft is saved 0.4 s after typing
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    drafts = page.get_by_role("treeitem", name=re.compile(r"^Drafts 1 unsent drafts"))
    await expect(drafts).to_be_visible()
    await drafts.click()
    await expect(page.locator("#drafts-local")).to_contain_text("Kept across a reload")
    await page.locator("#drafts-local .draft-open").click()
    await expect(page.get_by_label("Message", exact=True)).to_have_value("Half-written thoughts.")
    await expect(page.get_by_label("To", exact=True)).to_have_value(re.compile(tess.email))
    await expect(page.locator(".upload[data-state=done]")).to_contain_text("dropped.txt")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.get_by_role("dialog", name="New message")).to_be_hidden()
    await expect(page.locator("#drafts-local")).to_be_hidden()
    (got,) = [m for m in await tess.messages("inbox") if m["subject"] == "Kept across a reload"]
    assert got["has_attachments"]


async def test_reply_all_forward_delivery_and_preview(webmail: Webmail) -> None:
    uma = await webmail.user("uma", "Uma Reader")
    vic = await webmail.user("vic", "Vic Sender")
    wes = await webmail.user("wes", "Wes Copied")
    picture = await vic.upload("pixel.png", PIXEL, "image/png")
    await vic.send(
        to=[uma.email, wes.email],
        cc=[{"name": "Remote Person", "email": "someone@remote.test"}],
        subject="Team photo",
        body="See the picture.",
        attachments=[picture["id"]],
    )
    page = await webmail.open(uma)
    await page.locator("#messages .row", has_text="Team photo").locator(".row-link").click()
    await expect(page.locator(".att-preview img")).to_be_visible()

    # Reply all: the sender in To, the others (not me) in Cc.
    await page.keyboard.press("a")
    await expect(page.get_by_label("To", exact=True)).to_have_value(f"Vic Sender <{vic.email}>")
    cc = page.get_by_label("Cc", exact=True)
    await expect(cc).to_have_value(re.compile(re.escape(wes.email)))
    await expect(cc).to_have_value(re.compile("someone@remote.test"))
    await expect(cc).not_to_have_value(re.compile(re.escape(uma.email)))
    # Discard, and forward in the same task: the discarded dialog's close
    # event runs after the forward has opened, and must leave its draft be.
    await page.evaluate(
        """() => {
            const dialog = document.querySelector('#compose-dialog');
            [...dialog.querySelectorAll('button')]
                .find((b) => b.textContent.trim() === 'Discard')
                .click();
            document.body.dispatchEvent(new KeyboardEvent('keydown', { key: 'f', bubbles: true }));
        }"""
    )

    # Forward: the attachment comes along, the text is quoted.
    await expect(page.get_by_label("Subject")).to_have_value("Fwd: Team photo")
    await expect(page.get_by_label("Message", exact=True)).to_have_value(
        re.compile("Forwarded message")
    )
    await expect(page.locator(".upload[data-state=done]")).to_contain_text("pixel.png")
    await page.get_by_label("To", exact=True).fill(f"{wes.email}, far@remote.test")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.get_by_role("dialog", name="Forward")).to_be_hidden()

    # The sender's copy shows each recipient's standing, and follows it live.
    await page.get_by_role("treeitem", name=re.compile("^Sent")).click()
    await page.locator("#messages .row", has_text="Fwd: Team photo").locator(".row-link").click()
    delivery = page.locator(".delivery")
    await expect(delivery.locator(f"[data-email='{wes.email}']")).to_contain_text("Delivered")
    await expect(delivery.locator("[data-email='far@remote.test']")).to_contain_text("Queued")
    (sent,) = [m for m in await uma.messages("sent") if m["subject"] == "Fwd: Team photo"]
    mailbox = webmail.service.runtime.stores.mailbox
    later = int(time.time() * 1000) + 15 * 60 * 1000
    await mailbox.set_deliveries(
        int(uma.id),
        int(sent["id"]),
        [Delivery("far@remote.test", "deferred", "451 4.7.1 greylisted, try later", later)],
    )
    far = delivery.locator("[data-email='far@remote.test']")
    await expect(far).to_contain_text("Deferred", timeout=3000)
    await expect(far).to_contain_text("451 4.7.1 greylisted")
    await expect(far).to_contain_text("next try")
    await mailbox.set_deliveries(
        int(uma.id),
        int(sent["id"]),
        [Delivery("far@remote.test", "bounced", "550 5.1.1 no such user")],
    )
    await expect(far).to_contain_text("Bounced", timeout=3000)
    await expect(far).to_contain_text("550 5.1.1 no such user")


async def test_notification_and_sign_out(webmail: Webmail) -> None:
    xena = await webmail.user("xena", "Xena")
    yuri = await webmail.user("yuri", "Yuri")
    context = await webmail.context(permissions=["notifications"])
    await context.add_init_script(
        "window.__notes = [];"
        "window.Notification = class { static permission = 'granted';"
        "  static requestPermission() { return Promise.resolve('granted'); }"
        "  constructor(title, options) { window.__notes.push([title, options.body]); }"
        "  addEventListener() {} };"
        "document.hasFocus = () => false;"
    )
    page = await webmail.open(xena, context)
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    await yuri.send(to=[xena.email], subject="Ping for you")
    await expect(page.locator("#messages .row", has_text="Ping for you")).to_be_visible()
    await page.wait_for_function("() => window.__notes.length > 0")
    assert await page.evaluate("window.__notes") == [["Yuri", "Ping for you"]]

    await page.get_by_role("button", name=re.compile("^Account")).click()
    await page.get_by_role("menuitem", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('mailfleet.session')") is None
    await page.get_by_label("Email address").fill(xena.email)
    await page.locator("#login-password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_have_text("Wrong email address or password.")
    await page.locator("#login-password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#messages .row", has_text="Ping for you")).to_be_visible()
    # The browser logs each refused request (the wrong password, the ended
    # session's last poll): expected here, nothing else may show.
    webmail.errors[:] = [e for e in webmail.errors if "status of 401" not in e]


async def test_a_mail_of_many_pictures_previews_only_the_first_dozen(webmail: Webmail) -> None:
    """Opening a mail of 15 photos fetches 12 previews, not all 15: the list
    shows the others as icons, each still downloadable."""
    yan = await webmail.user("yan", "Yan Reader")
    zoe = await webmail.user("zoe", "Zoe Photographer")
    pictures = [await zoe.upload(f"photo{n}.png", PIXEL, "image/png") for n in range(15)]
    await zoe.send(
        to=[yan.email],
        subject="Holiday pictures",
        body="All of them.",
        attachments=[p["id"] for p in pictures],
    )
    page = await webmail.open(yan)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/attachments/" in r.url else None)
    await page.locator("#messages .row", has_text="Holiday pictures").locator(".row-link").click()
    await expect(page.locator(".attachment")).to_have_count(15)
    await expect(page.locator(".att-preview img")).to_have_count(12)
    await page.wait_for_timeout(300)  # nothing more is on its way
    assert len(fetched) == 12
    await expect(page.locator(".att-download")).to_have_count(15)
