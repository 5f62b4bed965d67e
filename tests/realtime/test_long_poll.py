"""``GET /v1/events``: the long poll, over httpx like any outside client."""

from __future__ import annotations

import asyncio
import time

import pytest

from ..conftest import Service, User
from .conftest import flag, head, poll


async def test_answers_at_once_with_what_came_after_the_cursor(alice: User, bob: User) -> None:
    start = await head(alice)
    sent = await bob.send(to=[alice.email], subject="one")
    inbox = await alice.folder("inbox")
    began = time.monotonic()
    answer = await poll(alice, start, timeout=30)
    assert time.monotonic() - began < 15  # at once, not at its timeout (a loaded machine is slow)
    (message_id,) = [m["id"] for m in await alice.messages("inbox")]
    assert answer["events"] == [
        {
            "type": "message.new",
            "cursor": str(int(start) + 1),
            "data": {
                "id": message_id,
                "folder_id": inbox["id"],
                "thread_id": message_id,
                "is_read": False,
                "is_flagged": False,
            },
        },
        {
            "type": "folder.updated",
            "cursor": str(int(start) + 2),
            "data": {"id": inbox["id"], "name": "Inbox", "role": "inbox", "total": 1, "unread": 1},
        },
    ]
    assert answer["cursor"] == str(int(start) + 2)
    # Bob's own account saw his Sent copy; none of it reaches Alice.
    assert all(e["data"]["id"] != sent["id"] for e in answer["events"])
    again = await poll(alice, answer["cursor"], timeout=0)
    assert again == {"events": [], "cursor": answer["cursor"]}


async def test_waits_for_the_next_change(alice: User, bob: User) -> None:
    await bob.send(to=[alice.email])
    (message,) = await alice.messages("inbox")
    start = await head(alice)
    waiting = asyncio.ensure_future(poll(alice, start, timeout=30))
    # No cursor: from now on, nothing before the poll replayed.
    from_now = asyncio.ensure_future(poll(alice, None, timeout=30))
    await asyncio.sleep(0.3)
    assert not waiting.done() and not from_now.done()
    began = time.monotonic()
    await flag(alice, message["id"])
    for answer in (await waiting, await from_now):
        assert [e["type"] for e in answer["events"]] == ["message.updated"]
        assert answer["events"][0]["data"]["is_flagged"] is True
        assert answer["cursor"] == answer["events"][0]["cursor"] == str(int(start) + 1)
    assert time.monotonic() - began < 15  # woken by the change, long before the timeout


BAD_INPUT = [
    ({"cursor": "abc"}, "bad_cursor"),
    ({"cursor": "-1"}, "bad_cursor"),
    ({"cursor": "1.5"}, "bad_cursor"),
    ({"cursor": "99999999999999999999"}, "bad_cursor"),
    ({"timeout": "61"}, "invalid_field"),
    ({"timeout": "-1"}, "invalid_field"),
    ({"timeout": "soon"}, "invalid_field"),
]
BAD_TOKENS = [None, "not-a-token", "1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]


async def test_times_out_empty_and_refuses_bad_input(service: Service, alice: User) -> None:
    start = await head(alice)
    began = time.monotonic()
    answer = await poll(alice, start, timeout=0.6)
    assert answer == {"events": [], "cursor": start}
    assert 0.6 <= time.monotonic() - began < 10  # its timeout, then at once (load permitting)
    # One server for every refusal: each would cost a start of its own.
    for params, code in BAD_INPUT:
        response = await alice.client.get("/v1/events", params=params)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert error["code"] == code, params
        assert error["message"]
    for token in BAD_TOKENS:
        response = await service.client(token).get("/v1/events", params={"timeout": 0})
        assert response.status_code == 401, token
        assert response.json()["error"]["code"] in {"missing_token", "invalid_token"}


async def test_back_to_back_polls_keep_one_watch_of_the_account(
    alice: User, bob: User, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poller comes back right after each answer: the account's entry and
    its callback on the event bus linger for it instead of being dropped and
    made again."""
    import mailfleet.realtime.feed as feed_module

    feed = service.runtime.feed
    bus_watchers = service.runtime.stores.events._watchers  # type: ignore[attr-defined]
    account_id = int(alice.id)
    start = await head(alice)
    entries = set()
    for i in range(3):
        await bob.send(to=[alice.email], subject=f"m{i}")
        answer = await poll(alice, start, timeout=5)
        assert answer["events"]
        start = answer["cursor"]
        entries.add(feed._accounts[account_id])
        assert len(bus_watchers._by_account[account_id]) == 1
    assert len(entries) == 1
    assert feed.watched() == {}  # no one follows it between polls

    # Once no one has come back for the linger time, the watch ends.
    monkeypatch.setattr(feed_module, "WATCH_LINGER_SECONDS", 0.05)
    await poll(alice, start, timeout=0)
    async with asyncio.timeout(2):
        while account_id in feed._accounts:  # noqa: ASYNC110 (the server's state, polled)
            await asyncio.sleep(0.02)
    assert account_id not in bus_watchers._by_account


async def test_the_quick_answer_is_the_routes_answer(alice: User, bob: User) -> None:
    """A plain poll is answered in front of FastAPI (``api/events.py``,
    ``QuickPoll``); one with a repeated query parameter goes to the route.
    Both give the same answer, byte for byte, and the same headers."""
    start = await head(alice)
    await bob.send(to=[alice.email], subject="one")
    assert (await poll(alice, start, timeout=5))["events"]  # delivered
    await flag(alice, (await alice.messages("inbox"))[0]["id"])
    for params in (f"cursor={start}&timeout=5", "timeout=0", f"cursor={start}&timeout=0.25"):
        quick = await alice.client.get(f"/v1/events?{params}")
        routed = await alice.client.get(f"/v1/events?{params}&x=1&x=2")
        assert quick.status_code == routed.status_code == 200
        assert quick.content == routed.content
        assert quick.json()["cursor"]
        headers = {k: v for k, v in quick.headers.items() if k != "date"}
        assert headers == {k: v for k, v in routed.headers.items() if k != "date"}
