"""Conversations (issue 5, point 3): mail arrives over real SMTP at the MX or
is sent through the API, threads are read through the HTTP API."""

from __future__ import annotations

import asyncio
import smtplib
from email import message_from_bytes, policy
from typing import Any

import pytest

from mailfleet.ids import new_id, now_ms
from tests.conftest import Service, User

OUTSIDE = "ext@outside.example"
DAY_MS = 24 * 3600 * 1000


def mail(
    subject: str,
    *,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    to: str = "bob@example.com",
) -> bytes:
    lines = [f"From: Ext <{OUTSIDE}>", f"To: {to}", f"Subject: {subject}"]
    lines.append("Date: Tue, 24 Nov 2026 10:00:00 +0000")
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:  # folded, as mailers do: one id a line
        lines.append("References: " + "\r\n ".join(references.split(" ")))
    return ("\r\n".join(lines) + f"\r\n\r\nAbout {subject}.\r\n").encode()


async def smtp_send(service: Service, recipients: list[str], *raws: bytes) -> None:
    """One SMTP session to the MX, one transaction per mail."""

    def session() -> None:
        with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=10) as client:
            client.ehlo("client.example.net")
            for raw in raws:
                assert client.sendmail(OUTSIDE, recipients, raw) == {}

    await asyncio.to_thread(session)


async def deliver_at(service: Service, raw: bytes, recipient: str, received_at: int) -> None:
    """What the MX's accept does (raw to the blob store, a reference on
    ``incoming``), for a mail that arrived at ``received_at``: the past."""
    stores = service.runtime.stores
    blob = await stores.blobs.put(raw)
    queue_id = f"{new_id():x}"
    payload = {
        "queue_id": queue_id,
        "raw_hash": blob.hash,
        "raw_size": blob.size,
        "mail_from": OUTSIDE,
        "recipients": [recipient],
        "received_at": received_at,
        "client_ip": "192.0.2.1",
    }
    await stores.queue.put("incoming", payload, dedupe_key=queue_id)


async def arrive(service: Service, user: User, raw: bytes, count: int) -> None:
    """Mail for ``user`` over SMTP, waiting until its Inbox holds ``count``."""
    await smtp_send(service, [user.email], raw)
    assert len(await user.wait_for("inbox", count)) == count


async def by_subject(user: User, role: str = "inbox") -> dict[str, dict[str, Any]]:
    return {m["subject"]: m for m in await user.messages(role, limit=200)}


async def thread(user: User, thread_id: str) -> dict[str, Any]:
    response = await user.client.get(f"/v1/threads/{thread_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def chain_mail(n: int, *, with_references: bool) -> bytes:
    """Step n of a reply chain <step1> <- <step2> <- ... (subjects differ, so
    only the Message-ID headers can link them)."""
    parents = [f"<step{k}@outside.example>" for k in range(1, n)]
    return mail(
        f"Step {n}",
        message_id=f"<step{n}@outside.example>",
        in_reply_to=parents[-1] if parents else None,
        references=" ".join(parents) if with_references and parents else None,
    )


@pytest.mark.parametrize("arrival", ["one at a time", "one session"])
@pytest.mark.parametrize("with_references", [True, False], ids=["references", "in-reply-to"])
async def test_reply_chain_arriving_out_of_order_forms_one_thread(
    service: Service, bob: User, arrival: str, with_references: bool
) -> None:
    order = [3, 5, 1, 4, 2]
    raws = [chain_mail(n, with_references=with_references) for n in order]
    if arrival == "one at a time":
        for count, raw in enumerate(raws, 1):
            await arrive(service, bob, raw, count)
    else:  # likely one worker-in batch: threads decided inside one store call
        await smtp_send(service, [bob.email], *raws)
        assert len(await bob.wait_for("inbox", 5)) == 5

    steps = await by_subject(bob)
    assert len({m["thread_id"] for m in steps.values()}) == 1
    (thread_id,) = {m["thread_id"] for m in steps.values()}
    body = await thread(bob, thread_id)
    assert body["id"] == thread_id
    assert len(body["messages"]) == 5
    assert {m["id"] for m in body["messages"]} == {m["id"] for m in steps.values()}
    received = [m["received_at"] for m in body["messages"]]
    assert received == sorted(received), "oldest first"
    if arrival == "one at a time":  # each arrived later than the one before
        assert [m["subject"] for m in body["messages"]] == [f"Step {n}" for n in order]
    assert body["subject"] == body["messages"][0]["subject"]


async def test_unrelated_mails_titled_hello_stay_apart(service: Service, bob: User) -> None:
    await arrive(service, bob, mail("Hello", message_id="<hello-1@outside.example>"), 1)
    await arrive(service, bob, mail("Hello", message_id="<hello-2@outside.example>"), 2)
    await arrive(service, bob, mail("[news] hello", message_id="<hello-3@outside.example>"), 3)
    await bob.send(to=[bob.email], subject="Hello")  # to self: Sent and Inbox copies
    inbox = await bob.wait_for("inbox", 4)
    threads = [m["thread_id"] for m in inbox]
    assert len(set(threads)) == 4
    for thread_id in threads:
        assert len((await thread(bob, thread_id))["messages"]) in (1, 2)
    (sent,) = await bob.messages("sent")
    assert len((await thread(bob, sent["thread_id"]))["messages"]) == 2  # its own two copies


@pytest.mark.parametrize(("days_ago", "joins"), [(29, True), (31, False)])
async def test_reply_by_subject_only_joins_within_the_window(
    service: Service, bob: User, days_ago: int, joins: bool
) -> None:
    original = mail("Lunch on Friday", message_id="<lunch@outside.example>")
    await deliver_at(service, original, bob.email, now_ms() - days_ago * DAY_MS)
    assert len(await bob.wait_for("inbox", 1)) == 1
    # A client that sets no In-Reply-To or References, only a prefix.
    await arrive(service, bob, mail("Re: Lunch on Friday", message_id="<r1@elsewhere.example>"), 2)
    await arrive(
        service, bob, mail("AW: [team] RE: lunch ON friday", message_id="<r2@x.example>"), 3
    )
    found = await by_subject(bob)
    first = found["Lunch on Friday"]["thread_id"]
    replies = {
        found[s]["thread_id"] for s in ("Re: Lunch on Friday", "AW: [team] RE: lunch ON friday")
    }
    if joins:
        assert replies == {first}
        assert len((await thread(bob, first))["messages"]) == 3
    else:
        assert first not in replies
        # The two replies are within the window of each other.
        assert len(replies) == 1
        assert len((await thread(bob, first))["messages"]) == 1


async def test_broken_references_thread_by_what_is_valid(service: Service, bob: User) -> None:
    await arrive(service, bob, mail("Root", message_id="<root@outside.example>"), 1)
    garbage = "garbage <> <no-at-sign> <missing-1@outside.example> <root@outside.example> <a b@c>"
    await arrive(
        service,
        bob,
        mail(
            "Garbage around the parent",
            message_id="<g1@outside.example>",
            in_reply_to="<missing-2@outside.example>",
            references=garbage,
        ),
        2,
    )
    many = " ".join(f"<lost-{i}@outside.example>" for i in range(60))
    await arrive(
        service,
        bob,
        mail(
            "Sixty lost ancestors, then the parent",
            message_id="<g2@outside.example>",
            references=f"{many} <g1@outside.example>",
        ),
        3,
    )
    # Only the last 20 references count: a parent named before 25 others does not.
    await arrive(
        service,
        bob,
        mail(
            "Parent too far back",
            message_id="<g3@outside.example>",
            references="<root@outside.example> "
            + " ".join(f"<far-{i}@outside.example>" for i in range(25)),
        ),
        4,
    )
    # Two replies to a parent never received meet in its (empty) place.
    await arrive(
        service, bob, mail("Ghost child 1", message_id="<c1@x.example>", in_reply_to="<ghost@x>"), 5
    )
    await arrive(
        service, bob, mail("Ghost child 2", message_id="<c2@x.example>", in_reply_to="<ghost@x>"), 6
    )
    await arrive(service, bob, mail("Only garbage", references="<> junk <x y@z>"), 7)

    found = await by_subject(bob)
    root = found["Root"]["thread_id"]
    assert found["Garbage around the parent"]["thread_id"] == root
    assert found["Sixty lost ancestors, then the parent"]["thread_id"] == root
    assert found["Parent too far back"]["thread_id"] != root
    assert found["Ghost child 1"]["thread_id"] == found["Ghost child 2"]["thread_id"]
    others = {found[s]["thread_id"] for s in ("Ghost child 1", "Only garbage", "Root")}
    assert len(others) == 3
    assert len((await thread(bob, root))["messages"]) == 3


def _headers(raw: bytes) -> Any:
    return message_from_bytes(raw, policy=policy.default)


async def test_reply_through_the_api_carries_headers_and_joins_on_both_sides(
    alice: User, bob: User
) -> None:
    await alice.send(to=[bob.email], subject="Plan", body="first")
    (alice_sent_1,) = await alice.messages("sent")
    (bob_inbox_1,) = await bob.messages("inbox")
    first_id = (await alice.client.get(f"/v1/messages/{alice_sent_1['id']}")).json()[
        "message_id_header"
    ]

    reply = await bob.send(
        to=[alice.email], subject="Re: Plan", body="second", in_reply_to=bob_inbox_1["id"]
    )
    raw = (await bob.client.get(f"/v1/messages/{reply['id']}/raw")).content
    second_id = _headers(raw)["Message-ID"]
    assert _headers(raw)["In-Reply-To"] == first_id
    assert _headers(raw)["References"].split() == [first_id]
    bob_sent_2 = (await bob.client.get(f"/v1/messages/{reply['id']}")).json()
    assert bob_sent_2["in_reply_to"] == first_id
    assert bob_sent_2["thread_id"] == bob_inbox_1["thread_id"]
    alice_inbox_2 = (await alice.messages("inbox"))[0]
    assert alice_inbox_2["thread_id"] == alice_sent_1["thread_id"]

    third = await alice.send(
        to=[bob.email], subject="Re: Plan", body="third", in_reply_to=alice_inbox_2["id"]
    )
    raw = (await alice.client.get(f"/v1/messages/{third['id']}/raw")).content
    assert _headers(raw)["In-Reply-To"] == second_id
    assert _headers(raw)["References"].split() == [first_id, second_id]

    for user, expected in ((bob, ["Plan", "Re: Plan", "Re: Plan"]),):
        inbox = await user.messages("inbox")
        assert {m["thread_id"] for m in inbox} == {bob_inbox_1["thread_id"]}
        body = await thread(user, bob_inbox_1["thread_id"])
        assert [m["subject"] for m in body["messages"]] == expected
        assert [m["folder_id"] for m in body["messages"]] == [
            (await user.folder(role))["id"] for role in ("inbox", "sent", "inbox")
        ]
    alice_thread = await thread(alice, alice_sent_1["thread_id"])
    assert [m["snippet"] for m in alice_thread["messages"]] == ["first", "second", "third"]
    assert bob_inbox_1["thread_id"] != alice_sent_1["thread_id"]  # one per account


async def test_another_account_never_sees_the_thread(service: Service, bob: User) -> None:
    carol = await service.user("carol")
    root, reply = (
        mail("Shared", message_id="<shared@outside.example>"),
        mail(
            "Re: Shared",
            message_id="<shared-2@outside.example>",
            in_reply_to="<shared@outside.example>",
        ),
    )
    await smtp_send(service, [bob.email, carol.email], root)
    await bob.wait_for("inbox", 1)
    await carol.wait_for("inbox", 1)
    await smtp_send(service, [bob.email], reply)  # only Bob gets the reply
    bob_thread = (await bob.wait_for("inbox", 2))[0]["thread_id"]
    (carol_message,) = await carol.messages("inbox")
    assert carol_message["thread_id"] != bob_thread
    assert len((await thread(carol, carol_message["thread_id"]))["messages"]) == 1
    assert len((await thread(bob, bob_thread))["messages"]) == 2

    for who, thread_id in ((carol, bob_thread), (bob, carol_message["thread_id"])):
        response = await who.client.get(f"/v1/threads/{thread_id}")
        assert response.status_code == 404
        assert response.json() == {
            "error": {"code": "thread_not_found", "message": "no such thread"}
        }
    for unknown in ("123", "not-a-number", "99999999999999999999"):
        response = await bob.client.get(f"/v1/threads/{unknown}")
        assert response.status_code == 404
    bob_inbox = await bob.folder("inbox")
    response = await carol.client.get(
        f"/v1/folders/{bob_inbox['id']}/messages", params={"group": "thread"}
    )
    assert response.status_code == 404


async def test_listing_grouped_by_thread(alice: User, bob: User) -> None:
    # Five threads from Alice with 1..5 messages in Bob's Inbox, sent
    # interleaved; Bob answers thread 2 (his reply counts, in Sent).
    last_sent: dict[int, str] = {}
    for round_ in range(5):
        for size in range(1, 6):
            if round_ < size:
                parent = last_sent.get(size)
                sent = await alice.send(
                    to=[bob.email],
                    subject=f"T{size}" if parent is None else f"Re: T{size}",
                    body=f"T{size} #{round_ + 1}",
                    in_reply_to=parent,
                )
                last_sent[size] = sent["id"]
    inbox = await bob.folder("inbox")
    newest_t2 = next(m for m in await bob.messages("inbox") if m["snippet"] == "T2 #2")
    await bob.send(to=[alice.email], subject="Re: T2", body="bob", in_reply_to=newest_t2["id"])

    rows: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"group": "thread", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await bob.client.get(f"/v1/folders/{inbox['id']}/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        rows.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    # Newest first by each thread's newest Inbox message: T5's was sent last.
    assert [r["snippet"] for r in rows] == ["T5 #5", "T4 #4", "T3 #3", "T2 #2", "T1 #1"]
    assert [r["thread_count"] for r in rows] == [5, 4, 3, 3, 1]
    assert len({r["thread_id"] for r in rows}) == 5
    assert all(r["folder_id"] == inbox["id"] for r in rows)

    # Unread only: reading T5's newest leaves its previous message as its row.
    await bob.client.patch(f"/v1/messages/{rows[0]['id']}", json={"is_read": True})
    unread = await bob.client.get(
        f"/v1/folders/{inbox['id']}/messages", params={"group": "thread", "is_read": "false"}
    )
    assert [r["snippet"] for r in unread.json()["items"]][:2] == ["T5 #4", "T4 #4"]

    # The flat listing is unchanged: every message, no thread_count.
    flat = (await bob.client.get(f"/v1/folders/{inbox['id']}/messages")).json()
    assert len(flat["items"]) == 15
    assert "thread_count" not in flat["items"][0]
    bad = await bob.client.get(f"/v1/folders/{inbox['id']}/messages", params={"group": "x"})
    assert bad.status_code == 400
