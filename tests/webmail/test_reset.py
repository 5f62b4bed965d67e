"""A client away for longer than the change log keeps gets ``reset`` and
refetches: everything is there afterwards, once."""

from __future__ import annotations

import pytest

from tests.webmail.conftest import Link, Webmail, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The smallest log a server may keep: 100 changes (pruned past 164).
SERVER_SETTINGS = {"storage": {"change_log_keep": 100}}


async def test_reset_after_a_long_absence_refetches(webmail: Webmail) -> None:
    zoe = await webmail.user("zoe")
    abe = await webmail.user("abe")
    context = await webmail.context()
    link = Link(context)
    await link.install()
    page = await webmail.open(zoe, context)
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    await link.cut()
    await expect(page.locator("body")).to_have_attribute("data-live", "offline")
    # Each mail is two changes (message.new, folder.updated): 90 mails push the
    # cursor the page holds out of the log.
    for n in range(90):
        await abe.send(to=[zoe.email], subject=f"Backlog {n:02d}")
    await link.restore()
    await expect(page.locator("#folders [data-role=inbox] .count")).to_have_text(
        "90 unread", timeout=10_000
    )
    assert await page.evaluate("window.mailfleet.resets") >= 1
    await expect(page.locator("#messages .row")).to_have_count(50)
    await expect(page.locator("#messages .row", has_text="Backlog 89")).to_have_count(1)
    await expect(page.locator("#messages .row", has_text="Backlog 40")).to_have_count(1)
