"""Listing pages are kept encoded by each API process (api/page_cache.py), yet
a listing never shows a state older than the account's last change, whichever
process made it: this one, another ``mailfleet serve --roles api`` on the same
data, or worker-in storing mail from SMTP. Entity tags let a client revalidate
a page without downloading it again."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Service, User
from tests.test_restart import free_port, start

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def other_process(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """A second ``mailfleet serve --roles api`` on the same data directory."""
    data_dir = Path(service.runtime.settings.data_dir)
    port = free_port()
    process = await asyncio.to_thread(start, data_dir, port, "--roles", "api")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)


async def inbox_page(user: User, **params: Any) -> httpx.Response:
    inbox = await user.folder("inbox")
    response = await user.client.get(f"/v1/folders/{inbox['id']}/messages", params=params)
    assert response.status_code == 200, response.text
    return response


def deliver_over_smtp(service: Service, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "carol@outside.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=10) as client:
        client.send_message(message)


async def test_a_page_follows_changes_made_in_this_process(
    service: Service, alice: User, bob: User
) -> None:
    for i in range(3):
        await alice.send(to=[bob.email], subject=f"m{i}")
    first = await inbox_page(bob)
    again = await inbox_page(bob)
    assert again.content == first.content
    newest = first.json()["items"][0]
    assert newest["is_read"] is False

    patched = await bob.client.patch(f"/v1/messages/{newest['id']}", json={"is_read": True})
    assert patched.status_code == 200, patched.text
    items = (await inbox_page(bob)).json()["items"]
    assert [m["is_read"] for m in items] == [True, False, False]
    # Each filter and shape is its own page, and each follows the change.
    unread = (await inbox_page(bob, is_read="false")).json()["items"]
    assert [m["subject"] for m in unread] == ["m1", "m0"]
    threads = (await inbox_page(bob, group="thread")).json()["items"]
    assert [m["is_read"] for m in threads] == [True, False, False]


async def test_a_page_follows_changes_made_by_other_processes(
    service: Service, alice: User, bob: User, other_process: httpx.AsyncClient
) -> None:
    await alice.send(to=[bob.email], subject="first")
    assert [m["subject"] for m in (await inbox_page(bob)).json()["items"]] == ["first"]

    # A write through another API process: this one's cached page is stale.
    message_id = (await inbox_page(bob)).json()["items"][0]["id"]
    auth = {"Authorization": f"Bearer {bob.token}"}
    flagged = await other_process.patch(
        f"/v1/messages/{message_id}", json={"is_flagged": True}, headers=auth
    )
    assert flagged.status_code == 200, flagged.text
    assert (await inbox_page(bob)).json()["items"][0]["is_flagged"] is True

    # And the other process's cached page after a write through this one.
    inbox = await bob.folder("inbox")
    url = f"/v1/folders/{inbox['id']}/messages"
    assert (await other_process.get(url, headers=auth)).json()["items"][0]["is_read"] is False
    await bob.client.patch(f"/v1/messages/{message_id}", json={"is_read": True})
    assert (await other_process.get(url, headers=auth)).json()["items"][0]["is_read"] is True

    # Mail stored by worker-in, from SMTP.
    await asyncio.to_thread(deliver_over_smtp, service, bob.email, "over smtp")
    items = await bob.wait_for("inbox", 2)
    assert [m["subject"] for m in items] == ["over smtp", "first"]


async def test_entity_tags_revalidate_a_page_per_account(
    service: Service, alice: User, bob: User
) -> None:
    await alice.send(to=[bob.email], subject="hello")
    first = await inbox_page(bob)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    assert "authorization" in first.headers["vary"].lower()

    inbox = await bob.folder("inbox")
    url = f"/v1/folders/{inbox['id']}/messages"
    unchanged = await bob.client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    weak = await bob.client.get(url, headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304

    # Another account presenting bob's tag for its own Inbox gets its page.
    alice_inbox = await alice.folder("inbox")
    theirs = await alice.client.get(
        f"/v1/folders/{alice_inbox['id']}/messages", headers={"If-None-Match": etag}
    )
    assert theirs.status_code == 200

    await alice.send(to=[bob.email], subject="again")
    changed = await bob.client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert [m["subject"] for m in changed.json()["items"]] == ["again", "hello"]


async def test_errors_are_not_kept(service: Service, bob: User) -> None:
    missing = await bob.client.get("/v1/folders/999999/messages")
    assert missing.status_code == 404
    assert "etag" not in missing.headers
    bad = await bob.client.get("/v1/folders/999999/messages", params={"limit": 0})
    assert bad.status_code == 400
