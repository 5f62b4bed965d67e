"""The webmail by keyboard alone, with Gmail's shortcuts: navigate, open,
reply, archive, star, delete, spam, help, compose, search."""

from __future__ import annotations

import re

import pytest

from tests.webmail.conftest import Webmail, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_keyboard_only(webmail: Webmail) -> None:
    oli = await webmail.user("oli", "Oli Keys")
    pat = await webmail.user("pat", "Pat Writer")
    for subject in ("First", "Second", "Third", "Fourth"):
        await pat.send(to=[oli.email], subject=subject, body=f"Body of {subject}.")
    page = await webmail.open(oli)
    rows = page.locator("#messages .row")
    await expect(rows).to_have_count(4)
    active = page.locator("#messages .row.active")
    keys = page.keyboard

    # j / k move through the list (newest first), focus follows.
    await keys.press("j")
    await expect(active).to_contain_text("Fourth")
    await keys.press("j")
    await keys.press("j")
    await expect(active).to_contain_text("Second")
    await keys.press("k")
    await expect(active).to_contain_text("Third")
    await expect(active.locator(".row-link")).to_be_focused()
    await keys.press("j")

    # o opens; r replies; Ctrl+Enter sends.
    await keys.press("o")
    await expect(page.locator(".thread-subject")).to_contain_text("Second")
    await keys.press("r")
    compose = page.get_by_role("dialog", name="Reply")
    await expect(compose).to_be_visible()
    await expect(page.get_by_label("Subject")).to_have_value("Re: Second")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await keys.type("Replying by keyboard.")
    await keys.press("Control+Enter")
    await expect(compose).to_be_hidden()
    await expect(page.locator(".thread .msg")).to_have_count(2)

    # e archives the open conversation and goes back to the list.
    await keys.press("e")
    await expect(page.locator("#messages .row", has_text="Second")).to_have_count(0)
    await expect(rows).to_have_count(3)
    await expect(page.locator("#reader-body")).to_be_hidden()

    # j k in the open conversation go to the next / previous one; u goes back.
    await keys.press("k")
    await keys.press("k")
    await expect(active).to_contain_text("Fourth")
    await keys.press("Enter")
    await expect(page.locator(".thread-subject")).to_contain_text("Fourth")
    await keys.press("j")
    await expect(page.locator(".thread-subject")).to_contain_text("Third")
    await keys.press("u")
    await expect(page.locator("#reader-body")).to_be_hidden()
    await expect(active).to_contain_text("Third")

    # s stars, # deletes, ! reports spam: the active row each time.
    await keys.press("s")
    await expect(active.locator(".star")).to_have_attribute("aria-pressed", "true")
    await keys.press("#")
    await expect(page.locator("#messages .row", has_text="Third")).to_have_count(0)
    await expect(active).to_have_count(1)
    spam_subject = (await active.locator(".row-subject").inner_text()).strip()
    await keys.press("!")
    await expect(page.locator("#messages .row", has_text=spam_subject)).to_have_count(0)
    await expect(page.locator("#folders [data-role=junk] .count")).to_have_text("1 unread")

    # ? shows the help, Esc closes it; c composes; / searches.
    await keys.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    await expect(help_dialog).to_be_visible()
    await expect(help_dialog).to_contain_text("Report spam")
    await keys.press("Escape")
    await expect(help_dialog).to_be_hidden()
    await keys.press("c")
    await expect(page.get_by_role("dialog", name="New message")).to_be_visible()
    await expect(page.get_by_label("To", exact=True)).to_be_focused()
    await keys.press("Escape")
    await expect(page.get_by_role("dialog", name="New message")).to_be_hidden()
    await keys.press("/")
    await expect(page.get_by_role("searchbox", name="Search mail")).to_be_focused()
    await keys.type("keyboard")
    await keys.press("Enter")
    await expect(page.locator("#list-title")).to_have_text("Search: keyboard")
    await expect(page.locator("#messages .row")).to_have_count(1)

    # The reply went out in the right thread.
    replies = await pat.messages("inbox")
    reply = next(m for m in replies if m["subject"] == "Re: Second")
    sent = await pat.messages("sent")
    second = next(m for m in sent if m["subject"] == "Second")
    assert reply["thread_id"] == second["thread_id"]
    full = (await pat.client.get(f"/v1/messages/{reply['id']}")).json()
    assert re.search(r"^Replying by keyboard\.", full["body"])
    assert full["in_reply_to"]
