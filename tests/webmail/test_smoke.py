"""Sign-up, sign-in, the page's security headers and the JSON 404 beside it."""

from __future__ import annotations

import pytest

from tests.webmail.conftest import Webmail, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_sign_up_then_inbox(webmail: Webmail) -> None:
    context = await webmail.context()
    page = webmail.watch(await context.new_page())
    await page.goto("/")
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Your name").fill("Carol Web")
    await page.get_by_label("Choose an address").fill("carol.web@example.com")
    await page.locator("#signup-password").fill("a fine password")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    await expect(page.get_by_role("tree", name="Folders")).to_contain_text("Sent")
    await page.screenshot(path="/tmp/webmail-smoke.png")
