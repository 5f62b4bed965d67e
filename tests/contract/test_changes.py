"""Change-log contract (part of MailboxStore): every mailbox change gets the
account's next sequence number in the same transaction, in order; a reader
resuming from its last number misses nothing and sees nothing twice; a cursor
older than what the log keeps answers ``reset``, never a gap."""

from __future__ import annotations

from typing import Any

import pytest

from mailfleet.ids import new_id
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import Change, Delivery, Folder, MailboxStore, MessagePatch

from .implementations.mailbox import KEEP_CHANGES, MailboxBackend
from .mailboxes import Box, mail, new_box


@pytest.fixture
def store(mailbox_backend: MailboxBackend) -> MailboxStore:
    return mailbox_backend.mailbox


async def everything(store: MailboxStore, box: Box, after: int = 0) -> list[Change]:
    page = await store.changes(box.account_id, after, limit=10_000)
    assert not page.reset
    return page.changes


def kinds(changes: list[Change]) -> list[tuple[str, Any]]:
    return [(c.kind, c.data.get("id")) for c in changes]


async def test_a_new_mailbox_has_an_empty_log(store: MailboxStore) -> None:
    box = await new_box(store)
    page = await store.changes(box.account_id, 0, limit=10)
    assert (page.changes, page.head, page.reset) == ([], 0, False)


async def test_the_head_moves_with_every_change(store: MailboxStore) -> None:
    box = await new_box(store)
    a = box.account_id
    assert await store.head(a) == 0
    m = mail(box, delivery=(Delivery("x@example.org", "queued"),))
    heads = [await store.head(a)]
    await store.store_messages([m])
    heads.append(await store.head(a))
    await store.update_message(a, m.id, MessagePatch(is_flagged=True))
    heads.append(await store.head(a))
    await store.set_deliveries(a, m.id, [Delivery("x@example.org", "delivered", "250 ok")])
    heads.append(await store.head(a))
    await store.delete_message(a, m.id)
    heads.append(await store.head(a))
    assert heads == sorted(set(heads)), heads  # strictly rising
    assert heads[-1] == (await store.changes(a, 0, limit=1)).head


async def test_every_kind_of_change_in_order(mailbox_backend: MailboxBackend) -> None:
    backend = mailbox_backend
    store = backend.mailbox
    box = await new_box(store, "Projects")
    a, inbox, projects = box.account_id, box.folder("inbox"), box.folder("Projects")
    m1, m2 = mail(box), mail(box, "sent", delivery=(Delivery("x@example.org", "queued"),))
    await store.store_messages([m1, m2])
    await store.update_message(a, m1.id, MessagePatch(is_read=True))
    await store.update_message(a, m1.id, MessagePatch(is_flagged=True))
    await store.update_message(a, m1.id, MessagePatch(folder_id=projects))
    await store.set_deliveries(a, m2.id, [Delivery("x@example.org", "delivered", "250 ok")])
    folder = Folder(a, new_id(), "Later", None, 0, 0)
    await store.create_folder(folder)
    await store.rename_folder(a, folder.id, "Someday")
    await store.delete_folder(a, projects, box.folder("trash"))
    await store.delete_message(a, m1.id)

    log = await everything(store, box)
    assert [c.seq for c in log] == list(range(1, len(log) + 1))
    assert kinds(log) == [
        ("message.new", m1.id),
        ("message.new", m2.id),
        ("folder.updated", inbox),
        ("folder.updated", box.folder("sent")),
        ("message.updated", m1.id),  # read
        ("folder.updated", inbox),
        ("message.updated", m1.id),  # flagged: no count moves
        ("message.updated", m1.id),  # moved
        ("folder.updated", inbox),
        ("folder.updated", projects),
        ("message.updated", m2.id),  # delivered
        ("folder.updated", folder.id),  # created
        ("folder.updated", folder.id),  # renamed
        ("message.updated", m1.id),  # moved out of the deleted folder
        ("folder.updated", box.folder("trash")),
        ("folder.updated", projects),  # deleted
        ("message.deleted", m1.id),
        ("folder.updated", box.folder("trash")),
    ]
    by_seq = {c.seq: c for c in log}
    assert by_seq[5].data == {
        "id": m1.id,
        "folder_id": inbox,
        "thread_id": m1.id,
        "is_read": True,
        "is_flagged": False,
    }
    assert by_seq[6].data == {
        "id": inbox,
        "name": "Inbox",
        "role": "inbox",
        "total": 1,
        "unread": 0,
    }
    assert by_seq[8].data["from_folder_id"] == inbox
    assert by_seq[11].data["delivery"] is True
    assert by_seq[13].data["name"] == "Someday"
    assert by_seq[16].data == {"id": projects, "deleted": True}
    # Each commit woke the account with its head.
    assert backend.commits[-1] == {a: len(log)}
    assert [h[a] for h in backend.commits if a in h] == sorted(
        {h[a] for h in backend.commits if a in h}
    )


async def test_resume_from_any_cursor_misses_nothing_and_repeats_nothing(
    store: MailboxStore,
) -> None:
    box = await new_box(store)
    messages = [mail(box) for _ in range(12)]
    for m in messages:
        await store.store_messages([m])
    full = await everything(store, box)
    for cursor in range(len(full) + 1):
        resumed: list[Change] = []
        after = cursor
        while True:
            page = await store.changes(box.account_id, after, limit=5)
            assert not page.reset and page.head == len(full)
            if not page.changes:
                break
            resumed += page.changes
            after = page.changes[-1].seq
        assert resumed == full[cursor:]


async def test_a_failed_write_leaves_no_change(store: MailboxStore) -> None:
    box = await new_box(store, "Projects")
    before = await everything(store, box)
    with pytest.raises(DuplicateKey):
        await store.create_folder(Folder(box.account_id, new_id(), "Projects", None, 0, 0))
    after = await store.changes(box.account_id, 0, limit=100)
    assert after.changes == before and after.head == len(before)


async def test_changes_are_per_account(store: MailboxStore) -> None:
    one, two = await new_box(store), await new_box(store)
    a, b, c = mail(one), mail(two), mail(one)
    await store.store_messages([a, b, c])
    assert kinds(await everything(store, one)) == [
        ("message.new", a.id),
        ("message.new", c.id),
        ("folder.updated", one.folder("inbox")),
    ]
    assert kinds(await everything(store, two)) == [
        ("message.new", b.id),
        ("folder.updated", two.folder("inbox")),
    ]
    assert [ch.seq for ch in await everything(store, two)] == [1, 2]


async def test_a_cursor_older_than_the_log_keeps_answers_reset(store: MailboxStore) -> None:
    box = await new_box(store)
    for _ in range(KEEP_CHANGES):  # two changes each: message.new and folder.updated
        await store.store_messages([mail(box)])
    page = await store.changes(box.account_id, 0, limit=10)
    assert page.reset and page.changes == [] and page.head == 2 * KEEP_CHANGES
    # The newest ``keep`` changes are still there, in order, without a gap.
    recent = await store.changes(box.account_id, page.head - KEEP_CHANGES, limit=10_000)
    assert not recent.reset
    assert [c.seq for c in recent.changes] == list(
        range(page.head - KEEP_CHANGES + 1, page.head + 1)
    )


async def test_a_cursor_ahead_of_the_head_answers_reset(store: MailboxStore) -> None:
    box = await new_box(store)
    await store.store_messages([mail(box)])
    page = await store.changes(box.account_id, 1_000, limit=10)
    assert page.reset and page.head == 2
