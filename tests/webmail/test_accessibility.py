"""axe-core (npm, tests/webmail/package.json, installed by scripts/bootstrap)
finds no serious or critical violation in the inbox, the reader, compose and
the help; the mail's own HTML frame is not ours and is left out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.webmail.conftest import Webmail, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
AXE_FOUND = AXE.exists()


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    if not await page.evaluate("Boolean(window.axe)"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {iframes: false, resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.skipif(
    not AXE_FOUND and os.environ.get("CI") != "true",
    reason="axe-core not installed: run scripts/bootstrap (needs npm)",
)
async def test_no_serious_accessibility_violations(webmail: Webmail) -> None:
    assert AXE_FOUND, f"{AXE} missing: run scripts/bootstrap (npm ci in tests/webmail)"
    quinn = await webmail.user("quinn", "Quinn Access")
    rae = await webmail.user("rae", "Rae Sender")
    await rae.send(to=[quinn.email], subject="Accessible?", body="Plain text.")
    await rae.send(to=[quinn.email], subject="Rich", body="x", html="<p>Hello <b>there</b></p>")
    # Injecting axe needs an inline script, which the page's own CSP refuses.
    context = await webmail.context(bypass_csp=True)
    page = await webmail.open(quinn, context)
    await expect(page.locator("#messages .row")).to_have_count(2)

    assert await serious_violations(page) == [], "inbox"
    await page.locator("#messages .row", has_text="Accessible?").locator(".row-link").click()
    await expect(page.locator(".msg.expanded .text-body")).to_be_visible()
    assert await serious_violations(page) == [], "reader"
    await page.keyboard.press("r")
    await expect(page.get_by_role("dialog", name="Reply")).to_be_visible()
    assert await serious_violations(page) == [], "compose"
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="Reply")).to_be_hidden()
    await page.keyboard.press("?")
    await expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    assert await serious_violations(page) == [], "help"
