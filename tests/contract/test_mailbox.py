"""MailboxStore contract: idempotent stores, folder counters that always equal
the rows, keyset paging that shows each message once while mail arrives,
threads, and one account never reaching another's data. Runs against every
selected implementation (tests/contract/backends.py)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from mailfleet.ids import new_id
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import (
    Delivery,
    Folder,
    ListCursor,
    MailboxStore,
    MessagePatch,
    NewMessage,
    Upload,
)

from .implementations.mailbox import MailboxBackend
from .mailboxes import Box, counted, counters, mail, new_box


@pytest.fixture
def store(mailbox_backend: MailboxBackend) -> MailboxStore:
    return mailbox_backend.mailbox


async def test_create_mailbox_is_idempotent(store: MailboxStore) -> None:
    box = await new_box(store)
    await store.create_mailbox(box.account_id, list(box.folders.values()))
    folders = await store.list_folders(box.account_id)
    assert sorted(f.id for f in folders) == sorted(f.id for f in box.folders.values())
    assert (await store.folder_by_role(box.account_id, "inbox")).id == box.folder("inbox")


async def test_store_is_idempotent_by_ingest_key(store: MailboxStore) -> None:
    box = await new_box(store)
    first = mail(box, ingest_key="in:q1")
    again = replace(mail(box, ingest_key="in:q1"), subject="second try")
    ids = await store.store_messages([first, again])
    assert ids == [first.id, first.id]
    assert await store.store_messages([again]) == [first.id]
    rows = await store.list_messages(
        box.account_id, box.folder("inbox"), is_read=None, limit=10, after=None
    )
    assert [r.subject for r in rows] == ["Hello"]
    assert await counters(store, box) == await counted(store, box)
    new = [c for c in (await store.changes(box.account_id, 0, limit=100)).changes]
    assert [c.kind for c in new].count("message.new") == 1
    # The same key in another account is another message.
    other = await new_box(store)
    assert await store.store_messages([mail(other, ingest_key="in:q1")]) != [first.id]


async def test_folder_counters_follow_every_kind_of_change(store: MailboxStore) -> None:
    box = await new_box(store, "Projects")
    a = box.account_id
    stored = [mail(box, is_read=i % 3 == 0) for i in range(9)] + [mail(box, "archive")]
    await store.store_messages(stored)
    assert await counters(store, box) == await counted(store, box)
    steps = [
        MessagePatch(is_read=True),
        MessagePatch(is_read=False),
        MessagePatch(is_flagged=True),
        MessagePatch(folder_id=box.folder("Projects")),
        MessagePatch(folder_id=box.folder("trash"), is_read=True),
        MessagePatch(folder_id=box.folder("inbox"), is_read=False),
        MessagePatch(is_read=True, is_flagged=False),
    ]
    for i, message in enumerate(stored):
        await store.update_message(a, message.id, steps[i % len(steps)])
        assert await counters(store, box) == await counted(store, box)
    assert await store.delete_message(a, stored[0].id)
    assert not await store.delete_message(a, stored[0].id)
    assert await counters(store, box) == await counted(store, box)
    await store.delete_folder(a, box.folder("Projects"), box.folder("trash"))
    assert box.folder("Projects") not in await counters(store, box)
    assert await counters(store, box) == await counted(store, box)


async def test_concurrent_changes_to_one_message_keep_counters_true(store: MailboxStore) -> None:
    box = await new_box(store, "Projects")
    targets = [box.folder("inbox"), box.folder("archive"), box.folder("Projects")]
    messages = [mail(box) for _ in range(3)]
    await store.store_messages(messages)
    rng = random.Random(7)
    patches = [
        MessagePatch(
            is_read=rng.choice([True, False, None]),
            is_flagged=rng.choice([True, False, None]),
            folder_id=rng.choice([*targets, None]),
        )
        for _ in range(60)
    ]
    await asyncio.gather(
        *(
            store.update_message(box.account_id, messages[i % 3].id, patch)
            for i, patch in enumerate(patches)
        )
    )
    assert await counters(store, box) == await counted(store, box)
    assert sum(t for t, _ in (await counters(store, box)).values()) == 3


async def test_keyset_paging_shows_each_message_once_while_mail_arrives(
    store: MailboxStore,
) -> None:
    box = await new_box(store)
    inbox = box.folder("inbox")
    # Same times for several messages: the id breaks the tie.
    initial = [mail(box, at=1_000_000 + (i // 3) * 1000, is_read=i % 2 == 0) for i in range(95)]
    await store.store_messages(initial)
    for is_read in (None, False):
        present = await store.list_messages(
            box.account_id, inbox, is_read=is_read, limit=10_000, after=None
        )
        seen: list[int] = []
        after: ListCursor | None = None
        while True:
            page = await store.list_messages(
                box.account_id, inbox, is_read=is_read, limit=10, after=after
            )
            seen += [m.id for m in page]
            # New mail arrives between pages: newer, so never on a later page.
            await store.store_messages([mail(box, at=2_000_000 + len(seen))])
            if len(page) < 10:
                break
            after = ListCursor(page[-1].received_at, page[-1].id)
        assert len(seen) == len(set(seen))
        assert set(seen) == {m.id for m in present}
    page = await store.list_messages(box.account_id, inbox, is_read=None, limit=200, after=None)
    keys = [(m.received_at, m.id) for m in page]
    assert keys == sorted(keys, reverse=True)


async def test_one_account_never_reaches_another(store: MailboxStore) -> None:
    alice, mallory = await new_box(store, "Private"), await new_box(store)
    a, m = alice.account_id, mallory.account_id
    sent = mail(alice, "sent", delivery=(Delivery("x@example.org", "queued"),))
    secret = mail(alice, message_id="<secret@test>")
    await store.store_messages([sent, secret])
    upload = Upload(a, new_id(), "f.txt", "text/plain", 3, "0" * 64, 0)
    await store.create_upload(upload)
    before = await store.changes(a, 0, limit=1000)
    inbox_a = alice.folder("inbox")

    assert await store.get_folder(m, inbox_a) is None
    assert await store.get_message(m, secret.id) is None
    assert await store.find_by_message_id_header(m, "<secret@test>") is None
    assert await store.list_messages(m, inbox_a, is_read=None, limit=10, after=None) == []
    assert await store.list_threads(m, inbox_a, is_read=None, limit=10, after=None) == []
    assert await store.thread_messages(m, secret.id, limit=10) == []
    assert await store.get_deliveries(m, sent.id) == []
    assert await store.get_upload(m, upload.id) is None
    assert await store.update_message(m, secret.id, MessagePatch(is_read=True)) is None
    assert not await store.delete_message(m, secret.id)
    await store.set_deliveries(m, sent.id, [Delivery("x@example.org", "delivered")])
    await store.rename_folder(m, alice.folder("Private"), "Mine now")
    await store.delete_folder(m, alice.folder("Private"), mallory.folder("trash"))
    # Moving one's own message into another account's folder moves nothing.
    own = mail(mallory)
    await store.store_messages([own])
    assert await store.update_message(m, own.id, MessagePatch(folder_id=inbox_a)) is None
    moved = await store.get_message(m, own.id)
    assert moved is not None and moved.summary.folder_id == mallory.folder("inbox")

    message = await store.get_message(a, secret.id)
    assert message is not None and not message.summary.is_read
    assert [d.status for d in await store.get_deliveries(a, sent.id)] == ["queued"]
    private = await store.get_folder(a, alice.folder("Private"))
    assert private is not None and private.name == "Private"
    assert await store.get_upload(a, upload.id) == upload
    assert (await store.changes(a, 0, limit=1000)) == before
    assert await counters(store, alice) == await counted(store, alice)
    assert await counters(store, mallory) == await counted(store, mallory)


async def test_folder_names_are_unique_per_account(store: MailboxStore) -> None:
    box, other = await new_box(store, "Projects"), await new_box(store)
    with pytest.raises(DuplicateKey):
        await store.create_folder(Folder(box.account_id, new_id(), "Projects", None, 0, 0))
    await store.create_folder(Folder(other.account_id, new_id(), "Projects", None, 0, 0))


async def test_deliveries_are_set_per_recipient(store: MailboxStore) -> None:
    box = await new_box(store)
    sent = mail(
        box,
        "sent",
        delivery=(Delivery("a@example.org", "queued"), Delivery("b@example.org", "queued")),
    )
    await store.store_messages([sent])
    await store.set_deliveries(
        box.account_id, sent.id, [Delivery("b@example.org", "deferred", "451 later", 123)]
    )
    got = {d.email: d for d in await store.get_deliveries(box.account_id, sent.id)}
    assert got["a@example.org"].status == "queued"
    assert got["b@example.org"] == Delivery("b@example.org", "deferred", "451 later", 123)
    stale = await store.stale_sends(received_before=sent.received_at + 1, limit=100)
    assert [(s.message_id, s.recipients) for s in stale if s.account_id == box.account_id] == [
        (sent.id, ("a@example.org",))
    ]


# -- threads -------------------------------------------------------------------


def _reply(box: Box, n: int, parent: int | None, *, at: int, folder: str = "inbox") -> NewMessage:
    return mail(
        box,
        folder,
        at=at,
        subject="Chain",
        message_id=f"<m{n}.{box.account_id}@x>",
        in_reply_to=f"<m{parent}.{box.account_id}@x>" if parent else None,
    )


async def test_out_of_order_arrivals_join_one_thread(store: MailboxStore) -> None:
    box = await new_box(store)
    chain = {n: _reply(box, n, n - 1 if n > 1 else None, at=n * 1000) for n in range(1, 6)}
    for n in (3, 5, 1, 4, 2):
        await store.store_messages([chain[n]])
    ids = [chain[n].id for n in range(1, 6)]
    stored = [await store.get_message(box.account_id, i) for i in ids]
    threads = {s.summary.thread_id for s in stored if s is not None}
    assert len(threads) == 1
    (thread_id,) = threads
    in_order = await store.thread_messages(box.account_id, thread_id, limit=100)
    assert [m.id for m in in_order] == ids  # oldest first


async def test_threads_of_one_batch_stay_in_their_accounts(store: MailboxStore) -> None:
    one, two = await new_box(store), await new_box(store)
    batch = [_reply(b, n, n - 1 if n > 1 else None, at=n) for n in (2, 1, 3) for b in (one, two)]
    await store.store_messages(batch)
    by_account: dict[int, set[int]] = {}
    for b in (one, two):
        rows = await store.list_messages(
            b.account_id, b.folder("inbox"), is_read=None, limit=10, after=None
        )
        by_account[b.account_id] = {r.thread_id for r in rows}
    assert [len(t) for t in by_account.values()] == [1, 1]
    (thread_of_one,) = by_account[one.account_id]
    assert await store.thread_messages(two.account_id, thread_of_one, limit=10) == []


async def test_grouped_listing_pages_by_newest_message_per_thread(store: MailboxStore) -> None:
    box = await new_box(store)
    a, inbox, sent = box.account_id, box.folder("inbox"), box.folder("sent")
    # Thread A: 1 <- 2 <- 4 (4 in Sent); thread B: 3 <- 5; thread C: 6.
    plan = [(1, None, "inbox"), (2, 1, "inbox"), (3, None, "inbox"), (4, 2, "sent")]
    plan += [(5, 3, "inbox"), (6, None, "inbox")]
    messages = {
        n: replace(_reply(box, n, p, at=n * 1000, folder=f), subject=f"s{n}") for n, p, f in plan
    }
    for m in messages.values():
        await store.store_messages([m])
    rows = await store.list_threads(a, inbox, is_read=None, limit=10, after=None)
    assert [(r.latest.id, r.count) for r in rows] == [
        (messages[6].id, 1),
        (messages[5].id, 2),
        (messages[2].id, 3),
    ]
    first = await store.list_threads(a, inbox, is_read=None, limit=2, after=None)
    last = first[-1].latest
    rest = await store.list_threads(
        a, inbox, is_read=None, limit=2, after=ListCursor(last.received_at, last.id)
    )
    assert [r.latest.id for r in first + rest] == [r.latest.id for r in rows]
    await store.update_message(a, messages[5].id, MessagePatch(is_read=True))
    unread = await store.list_threads(a, inbox, is_read=False, limit=10, after=None)
    assert [r.latest.id for r in unread] == [messages[6].id, messages[3].id, messages[2].id]
    assert await store.list_threads(a, sent, is_read=None, limit=10, after=None) != []
