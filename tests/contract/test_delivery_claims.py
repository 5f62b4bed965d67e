"""MailboxStore contract, ``claim_deliveries``: an attempt takes the
recipients still to try that no other attempt holds. Runs against every
selected mailbox implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from mailfleet.storage.interfaces import FOLDER_ROLES, Delivery, Folder, MailboxStore
from tests.mailbox.test_threads import _message

from .implementations.mailbox import MailboxBackend

A, B, C, D = "a@x.test", "b@x.test", "c@x.test", "d@x.test"


@pytest.fixture
async def store(mailbox_backend: MailboxBackend) -> AsyncIterator[MailboxStore]:
    store = mailbox_backend.mailbox
    await store.create_mailbox(
        1, [Folder(1, 10 + i, r, r, 0, 0) for i, r in enumerate(FOLDER_ROLES)]
    )
    sent = replace(
        _message(1),
        folder_id=11,
        delivery=(
            Delivery(A, "queued"),
            Delivery(B, "deferred", "451 later", 5),
            Delivery(C, "delivered"),
            Delivery(D, "queued"),
        ),
    )
    await store.store_messages([sent])
    return store


async def test_claim_takes_recipients_still_to_try_once(store: MailboxStore) -> None:
    message_id = _message(1).id
    got = await store.claim_deliveries(
        1, message_id, [A, B, C], claimant="item1", now_ms=100, until_ms=200
    )
    assert sorted(got, key=lambda d: d.email) == [
        Delivery(A, "queued"),
        Delivery(B, "deferred", "451 later", 5),
    ]
    # Another item, while the claim runs: nothing (D was not asked for).
    assert (
        await store.claim_deliveries(
            1, message_id, [A, B, C], claimant="item2", now_ms=150, until_ms=250
        )
        == []
    )
    # The same item again (its earlier attempt could not clear the claim).
    assert (
        len(
            await store.claim_deliveries(
                1, message_id, [A, B], claimant="item1", now_ms=150, until_ms=250
            )
        )
        == 2
    )
    # Once the claim has run out, anyone.
    assert {
        d.email
        for d in await store.claim_deliveries(
            1, message_id, [A, B, D], claimant="item2", now_ms=250, until_ms=350
        )
    } == {A, B, D}
    # set_deliveries clears the claim; a settled recipient is never taken.
    await store.set_deliveries(1, message_id, [Delivery(A, "delivered"), Delivery(B, "deferred")])
    assert [
        d.email
        for d in await store.claim_deliveries(
            1, message_id, [A, B, D], claimant="item3", now_ms=260, until_ms=400
        )
    ] == [B]
    assert await store.claim_deliveries(1, 999, [A], claimant="x", now_ms=0, until_ms=1) == []
    assert await store.claim_deliveries(1, message_id, [], claimant="x", now_ms=0, until_ms=1) == []


async def test_concurrent_claims_split_the_recipients(store: MailboxStore) -> None:
    message_id = _message(1).id
    results = await asyncio.gather(
        *(
            store.claim_deliveries(
                1, message_id, [A, B, D], claimant=f"item{n}", now_ms=100, until_ms=200
            )
            for n in range(8)
        )
    )
    taken = [d.email for result in results for d in result]
    assert sorted(taken) == [A, B, D]
