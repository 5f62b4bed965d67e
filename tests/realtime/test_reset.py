"""A cursor older than what the change log keeps: one ``reset`` at the head,
then events from there, over either transport."""

from __future__ import annotations

from ..conftest import Service, StartService
from .conftest import REALTIME, churn, flag, poll, receive, socket

KEEP = 100  # the least storage.change_log_keep allows


async def test_a_cursor_the_log_no_longer_keeps_gets_reset(start_service: StartService) -> None:
    service: Service = await start_service(
        {"realtime": REALTIME, "storage": {"change_log_keep": KEEP}}
    )
    alice, bob = await service.user("alice"), await service.user("bob")
    await bob.send(to=[alice.email])
    (message,) = await alice.messages("inbox")
    old = (await poll(alice, None))["cursor"]
    # Pruning runs once the log holds KEEP plus a slack of 64.
    await churn(service, alice, message["id"], KEEP + 80)
    head = (await poll(alice, None))["cursor"]

    answer = await poll(alice, old, timeout=5)
    assert answer == {"events": [{"type": "reset", "cursor": head}], "cursor": head}
    # A cursor the log still keeps replays as usual.
    recent = await poll(alice, str(int(head) - 3))
    assert [e["cursor"] for e in recent["events"]] == [str(int(head) - n) for n in (2, 1, 0)]

    async with socket(service, alice, cursor=old) as ws:
        (reset,) = await receive(ws, 1)
        assert reset == {"type": "reset", "cursor": head}
        await flag(alice, message["id"], True)  # the churn, an even count, left it unflagged
        (event,) = await receive(ws, 1)
        assert event["type"] == "message.updated"
        assert event["cursor"] == str(int(head) + 1)

    # A cursor ahead of the log is no cursor of this account's: reset too.
    ahead = await poll(alice, str(int(head) + 1000))
    assert ahead["events"] == [{"type": "reset", "cursor": str(int(head) + 1)}]
