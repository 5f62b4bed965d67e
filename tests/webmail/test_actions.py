"""Folders, search, move, delete, spam and not spam, selection, infinite
scroll and the phone layout: lists and counts follow every change."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page

from tests.webmail.conftest import Webmail, expect, screenshot_path

pytestmark = pytest.mark.asyncio(loop_scope="module")


def count_of(page: Page, role_or_name: str) -> object:
    return page.locator(f"#folders .folder[data-role={role_or_name}] .count")


def row(page: Page, text: str) -> object:
    return page.locator("#messages .row", has_text=text)


async def test_folders_search_move_delete_spam(webmail: Webmail) -> None:
    ivy = await webmail.user("ivy", "Ivy Reader")
    jack = await webmail.user("jack", "Jack Sender")
    for subject, body in [
        ("Budget 2027", "The budget spreadsheet numbers."),
        ("Lunch on Friday", "Pizza or sushi?"),
        ("Cheap watches", "Buy now, limited offer."),
    ]:
        await jack.send(to=[ivy.email], subject=subject, body=body)
    page = await webmail.open(ivy)
    await expect(page.locator("#messages .row")).to_have_count(3)
    await expect(count_of(page, "inbox")).to_have_text("3 unread")
    await expect(page.locator("body")).to_have_attribute("data-live", "live")
    await page.screenshot(path=screenshot_path("inbox"))

    # A folder of one's own: create, rename.
    await page.get_by_role("button", name="Manage folders").click()
    dialog = page.get_by_role("dialog", name="Folders")
    await dialog.get_by_label("New folder").fill("Projects")
    await dialog.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("treeitem", name="Projects")).to_be_visible()
    await dialog.get_by_label("Name of folder Projects").fill("Work")
    await dialog.get_by_role("button", name="Rename").click()
    await expect(page.get_by_role("treeitem", name="Work")).to_be_visible()
    await dialog.get_by_role("button", name="Done").click()

    # Select one conversation and move it into Work.
    await row(page, "Budget 2027").get_by_role("checkbox").check()
    await page.locator("#bulk-actions").get_by_role("button", name="Move to…").click()
    await page.get_by_role("dialog", name="Move to").get_by_role("button", name="Work").click()
    await expect(row(page, "Budget 2027")).to_have_count(0)
    await expect(count_of(page, "inbox")).to_have_text("2 unread")
    await expect(page.get_by_role("treeitem", name=re.compile(r"^Work 1 unread"))).to_be_visible()

    # Open one and delete it: to Trash.
    await row(page, "Lunch on Friday").locator(".row-link").click()
    await expect(page.locator(".thread-subject")).to_contain_text("Lunch on Friday")
    await page.locator(".reader-toolbar").get_by_role("button", name="Delete").click()
    await expect(row(page, "Lunch on Friday")).to_have_count(0)
    await expect(count_of(page, "inbox")).to_have_text("1 unread")
    # Undo brings it back where it was; delete it again from the list.
    await page.locator("#toast").get_by_role("button", name="Undo").click()
    await expect(row(page, "Lunch on Friday")).to_have_count(1)
    await row(page, "Lunch on Friday").get_by_role("checkbox").check()
    await page.locator("#bulk-actions").get_by_role("button", name="Delete").click()
    await expect(row(page, "Lunch on Friday")).to_have_count(0)
    await expect(count_of(page, "inbox")).to_have_text("1 unread")

    # Report spam, then not spam from Junk.
    await row(page, "Cheap watches").get_by_role("checkbox").check()
    await page.locator("#bulk-actions").get_by_role("button", name="Report spam").click()
    await expect(row(page, "Cheap watches")).to_have_count(0)
    await expect(count_of(page, "junk")).to_have_text("1 unread")
    await expect(count_of(page, "inbox")).to_have_count(0)
    await page.get_by_role("treeitem", name=re.compile("^Junk")).click()
    await row(page, "Cheap watches").locator(".row-link").click()
    await page.locator(".reader-toolbar").get_by_role("button", name="Not spam").click()
    await expect(row(page, "Cheap watches")).to_have_count(0)
    await expect(count_of(page, "junk")).to_have_count(0)
    await page.get_by_role("treeitem", name=re.compile("^Inbox")).click()
    await expect(row(page, "Cheap watches")).to_be_visible()

    # Search with an operator; results open like any message.
    await page.keyboard.press("/")
    await expect(page.get_by_role("searchbox", name="Search mail")).to_be_focused()
    await page.keyboard.type("budget from:" + jack.email)
    await page.keyboard.press("Enter")
    await expect(page.locator("#list-title")).to_have_text(re.compile("^Search: budget"))
    await expect(page.locator("#messages .row")).to_have_count(1)
    await page.screenshot(path=screenshot_path("search"))
    await row(page, "Budget 2027").locator(".row-link").click()
    await expect(page.locator(".msg.expanded .text-body")).to_contain_text("spreadsheet")
    await expect(page.get_by_role("treeitem", name=re.compile(r"^Work$"))).to_be_visible()

    # Deleting the folder moves its mail to Trash.
    page.once("dialog", lambda d: d.accept())
    await page.get_by_role("button", name="Manage folders").click()
    await page.get_by_role("dialog", name="Folders").get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("treeitem", name="Work")).to_have_count(0)
    await page.get_by_role("dialog", name="Folders").get_by_role("button", name="Done").click()
    await page.get_by_role("treeitem", name=re.compile("^Trash")).click()
    await expect(page.locator("#messages .row")).to_have_count(2)


async def test_infinite_scroll_and_unread_filter(webmail: Webmail) -> None:
    kim = await webmail.user("kim")
    lou = await webmail.user("lou")
    for n in range(57):
        await lou.send(to=[kim.email], subject=f"Note {n:02d}")
    page = await webmail.open(kim)
    await expect(page.locator("#messages .row")).to_have_count(50)
    await page.locator("#messages .row").last.scroll_into_view_if_needed()
    await expect(page.locator("#messages .row")).to_have_count(57)
    await expect(row(page, "Note 00")).to_have_count(1)
    # Read two, then show unread only.
    await row(page, "Note 56").locator(".row-link").click()
    await expect(row(page, "Note 56")).not_to_have_class(re.compile(r"\bunread\b"))
    await page.get_by_role("button", name="Unread only").click()
    await expect(page.get_by_role("button", name="Unread only")).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(row(page, "Note 56")).to_have_count(0)
    await expect(row(page, "Note 55")).to_have_count(1)


async def test_phone_layout(webmail: Webmail) -> None:
    mia = await webmail.user("mia", "Mia Mobile")
    ned = await webmail.user("ned", "Ned Long-Name Sender With A Very Long Name Indeed")
    await ned.send(
        to=[mia.email],
        subject="A subject long enough to need cutting on a narrow phone screen, surely",
        body="https://example.org/" + "a-very-long-unbroken-path-segment" * 6,
    )
    context = await webmail.context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = await webmail.open(mia, context)
    await expect(page.locator("#messages .row")).to_have_count(1)
    await expect(page.locator("#reader")).to_be_hidden()
    width = "document.documentElement.scrollWidth"
    assert await page.evaluate(width) <= 390
    await page.screenshot(path=screenshot_path("phone-inbox"))
    await page.get_by_role("button", name="Show folders").click()
    await expect(page.get_by_role("tree", name="Folders")).to_be_in_viewport()
    await page.keyboard.press("Escape")
    await page.locator("#messages .row-link").first.click()
    await expect(page.locator("#list-view")).to_be_hidden()
    await expect(page.locator(".msg.expanded .text-body")).to_contain_text("a-very-long")
    assert await page.evaluate(width) <= 390
    await page.screenshot(path=screenshot_path("phone-reader"))
    await page.get_by_role("link", name="Back").click()
    await expect(page.locator("#list-view")).to_be_visible()
