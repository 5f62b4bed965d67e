"""DirectoryStore contract, quarantine: one entry per ingest key whatever its
status, newest first with a keyset cursor, status moves that one caller
wins, and the blob references only entries still holding their mail make."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailfleet.ids import new_id
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import DirectoryStore, QuarantinedMail, SpamReason

from . import backends


@pytest.fixture(params=backends.params("directory"))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DirectoryStore]:
    async with request.param.open(tmp_path) as opened:
        yield opened


def held(key: str, raw_hash: str = "a" * 64) -> QuarantinedMail:
    return QuarantinedMail(
        id=new_id(),
        ingest_key=key,
        received_at=1_000,
        quarantined_at=2_000,
        mail_from="eve@outside.example",
        recipients=("bob@example.com", "carol@example.com"),
        client_ip="192.0.2.7",
        helo="mx.outside.example",
        sender="Eve <eve@outside.example>",
        subject="Invoice — überfällig",
        raw_hash=raw_hash,
        raw_size=1234,
        verdict="quarantine",
        score=1.5,
        reasons=(SpamReason("VIRUS", 0.0, "Eicar-Signature"), SpamReason("MISSING_MID", 1.5)),
        filter_headers="X-Spam-Verdict: quarantine\r\n",
    )


async def test_one_entry_per_mail_read_back_whole(store: DirectoryStore) -> None:
    first = held("in:q1")
    assert await store.quarantine(first) == first
    # worker-in seeing the mail again (a redelivery) keeps the first entry.
    again = await store.quarantine(replace(held("in:q1"), subject="other"))
    assert again == first
    assert await store.get_quarantined(first.id) == first
    assert await store.get_quarantined(new_id()) is None
    assert [m.id for m in await store.list_quarantined()] == [first.id]
    # The same id under another key is not a repeat.
    with pytest.raises(DuplicateKey):
        await store.quarantine(replace(held("in:q2"), id=first.id))


async def test_listing_is_newest_first_by_status_with_a_cursor(store: DirectoryStore) -> None:
    entries = [await store.quarantine(held(f"in:q{n}")) for n in range(5)]
    ids = [e.id for e in reversed(entries)]
    assert [m.id for m in await store.list_quarantined(limit=3)] == ids[:3]
    assert [m.id for m in await store.list_quarantined(before=ids[2], limit=3)] == ids[3:]
    assert await store.set_quarantine_status(
        entries[0].id, expected=("held",), status="deleted", at=5
    )
    assert [m.id for m in await store.list_quarantined()] == ids[:4]
    assert [m.id for m in await store.list_quarantined(status="deleted")] == [entries[0].id]
    assert [m.id for m in await store.list_quarantined(status=None)] == ids


async def test_status_moves_only_from_what_the_caller_expects(store: DirectoryStore) -> None:
    entry = await store.quarantine(held("in:q1"))
    assert await store.set_quarantine_status(
        entry.id, expected=("held",), status="releasing", at=10
    )
    # A delete racing the release loses; the release goes on from "releasing".
    assert not await store.set_quarantine_status(
        entry.id, expected=("held",), status="deleted", at=11
    )
    assert await store.set_quarantine_status(
        entry.id, expected=("held", "releasing"), status="released", at=12
    )
    found = await store.get_quarantined(entry.id)
    assert found is not None and (found.status, found.resolved_at) == ("released", 12)
    assert not await store.set_quarantine_status(
        new_id(), expected=("held",), status="deleted", at=13
    )
    # Released, a mail seen again is not held again.
    assert (await store.quarantine(held("in:q1"))).status == "released"


async def test_only_entries_holding_their_mail_name_its_blob(store: DirectoryStore) -> None:
    kept, releasing, released, deleted = "1" * 64, "2" * 64, "3" * 64, "4" * 64
    for n, raw_hash in enumerate((kept, releasing, released, deleted)):
        await store.quarantine(held(f"in:q{n}", raw_hash))
    entries = {m.raw_hash: m for m in await store.list_quarantined()}
    for raw_hash, status in (
        (releasing, "releasing"),
        (released, "released"),
        (deleted, "deleted"),
    ):
        assert await store.set_quarantine_status(
            entries[raw_hash].id, expected=("held",), status=status, at=1
        )
    asked = [kept, releasing, released, deleted, "5" * 64]
    assert await store.quarantine_blob_references(asked) == {kept, releasing}
    assert await store.quarantine_blob_references([]) == set()
