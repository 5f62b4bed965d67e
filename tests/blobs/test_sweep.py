"""The blob lifecycle on both profiles (decision 0018), through the storage
interfaces as the services use them: mail deleted for good in every account
that had it is freed (checked in the blob store itself), a blob a copy, an
upload or a queued item names never is, and a sweep racing new deliveries of
the same content never leaves one of them without its blobs.

Each test runs on one family's mailbox store, blob store and queue together
(``MAILFLEET_TEST_BACKENDS``): SQLite + files + SQLite queue, or PostgreSQL
shards + S3 (moto) + NATS JetStream."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailfleet.blobs import BlobSweep, BlobSweeper
from mailfleet.delivery.local import store_parts
from mailfleet.ids import new_id
from mailfleet.mailbox.service import MailboxService
from mailfleet.proto.mime import parse_message
from mailfleet.storage.distributed.s3_blobs import S3BlobStore
from mailfleet.storage.embedded.files import FileBlobStore
from mailfleet.storage.interfaces import (
    BlobStore,
    DirectoryStore,
    MailboxStore,
    NewMessage,
    QuarantinedMail,
    Queue,
    Upload,
)
from tests.contract import backends
from tests.contract.implementations.mailbox import MailboxBackend
from tests.contract.mailboxes import Box, mail, new_box

# Longer than any put-to-commit in these tests (at most ~0.1 s), so that the
# sweep's one assumption holds; S3 dates objects in whole seconds.
GRACE = {"embedded": 0.5, "distributed": 1.5}
ROUNDS = int(os.environ.get("MAILFLEET_RACE_ROUNDS", "3"))


def _families() -> list[Any]:
    by_family: dict[str, dict[str, Any]] = {}
    for role in ("mailbox", "blob", "queue"):
        for param in backends.params(role):
            implementation = param.values[0]
            by_family.setdefault(implementation.family, {})[role] = implementation
    return [pytest.param(roles, id=family) for family, roles in by_family.items()]


@dataclass
class Stack:
    family: str
    mailbox: MailboxStore
    directory: DirectoryStore
    blobs: BlobStore
    queue: Queue

    @property
    def grace(self) -> float:
        return GRACE[self.family]

    def sweep(self) -> BlobSweep:
        return BlobSweep(
            self.mailbox, self.directory, self.blobs, self.queue, grace_seconds=self.grace
        )


@pytest.fixture(params=_families())
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    roles = request.param
    async with AsyncExitStack() as opened:
        backend: MailboxBackend = await opened.enter_async_context(
            roles["mailbox"].open(tmp_path / "mailbox")
        )
        blobs = await opened.enter_async_context(roles["blob"].open(tmp_path / "blobs"))
        queue = await opened.enter_async_context(roles["queue"].open(tmp_path / "queue"))
        yield Stack(roles["mailbox"].family, backend.mailbox, backend.directory, blobs, queue)


def mime(text: str, attachment: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.org"
    message["Subject"] = text
    message["Message-ID"] = f"<{os.urandom(8).hex()}@test>"
    message.set_content(text)
    message.add_alternative(f"<p>{text}</p>", subtype="html")
    message.add_attachment(attachment, maintype="application", subtype="octet-stream")
    return message.as_bytes()


@dataclass
class Delivered:
    copies: list[NewMessage]
    blobs: dict[str, bytes]  # every blob the copies name, with its bytes


async def deliver(stack: Stack, boxes: list[Box], raw: bytes, *, pause: float = 0) -> Delivered:
    """What worker-in does: the raw mail and its parts to the blob store, then
    one copy per mailbox, ``pause`` seconds later (a slow batch)."""
    parsed = parse_message(raw)
    raw_blob = await stack.blobs.put(raw)
    parts = await store_parts(stack.blobs, parsed)
    await asyncio.sleep(pause)
    copies = [
        replace(
            mail(box),
            raw_hash=raw_blob.hash,
            raw_size=raw_blob.size,
            body_hash=parts.body_hash,
            html_hash=parts.html_hash,
            attachments=parts.attachments,
        )
        for box in boxes
    ]
    await stack.mailbox.store_messages(copies)
    named = {raw_blob.hash: raw, parts.body_hash: parsed.text.encode()}
    assert parts.html_hash is not None
    named[parts.html_hash] = parsed.html.encode()
    for attachment, original in zip(parts.attachments, parsed.attachments, strict=True):
        named[attachment.blob_hash] = original.data
    return Delivered(copies, named)


async def delete_for_good(stack: Stack, copy: NewMessage) -> None:
    """``DELETE /v1/messages/{id}`` twice: to Trash, then for good."""
    service = MailboxService(stack.mailbox, stack.blobs)
    await service.delete(copy.account_id, str(copy.id))
    assert (await stack.mailbox.get_message(copy.account_id, copy.id)) is not None
    await service.delete(copy.account_id, str(copy.id))
    assert (await stack.mailbox.get_message(copy.account_id, copy.id)) is None


async def stored_anywhere(blobs: BlobStore, blob_hash: str) -> bool:
    """Looked for in the store itself, live or condemned: the bucket's keys,
    or the pack's rows and the files."""
    if isinstance(blobs, S3BlobStore):
        listing = await blobs.s3.list_objects_v2(Bucket=blobs.bucket)
        return any(item["Key"].endswith(blob_hash) for item in listing.get("Contents", []))
    assert isinstance(blobs, FileBlobStore)
    with sqlite3.connect(blobs.pack_path) as conn:
        row = conn.execute("SELECT 1 FROM blobs WHERE hash = ?", (blob_hash,)).fetchone()
    return row is not None or any(p.name == blob_hash for p in blobs.root.rglob("*"))


async def live(blobs: BlobStore) -> set[str]:
    return {b.hash for b in await blobs.list_blobs(after="", limit=100_000)}


async def test_mail_deleted_for_good_in_every_account_is_freed(stack: Stack) -> None:
    sweep = stack.sweep()
    boxes = [await new_box(stack.mailbox) for _ in range(2)]
    delivered = await deliver(stack, boxes, mime("shared by two", os.urandom(200_000)))
    assert len(delivered.blobs) == 4  # raw, text, html, attachment (a file, not packed)
    await asyncio.sleep(stack.grace)
    report = await sweep.run(limit=1000)
    assert report.condemned == [] and report.examined == 4

    await delete_for_good(stack, delivered.copies[0])
    await asyncio.sleep(stack.grace)
    assert (await sweep.run(limit=1000)).condemned == []  # the other account keeps it

    await delete_for_good(stack, delivered.copies[1])
    report = await sweep.run(limit=1000)
    assert sorted(report.condemned) == sorted(delivered.blobs)
    assert report.purged == []
    for blob_hash, data in delivered.blobs.items():
        assert await stack.blobs.get(blob_hash) == data  # condemned, not gone yet

    await asyncio.sleep(stack.grace)
    report = await sweep.run(limit=1000)
    assert sorted(report.purged) == sorted(delivered.blobs)
    for blob_hash in delivered.blobs:
        assert not await stored_anywhere(stack.blobs, blob_hash)
        assert not await stack.blobs.exists(blob_hash)


def held_in_quarantine(raw_hash: str) -> QuarantinedMail:
    return QuarantinedMail(
        id=new_id(),
        ingest_key=f"in:{raw_hash[:12]}",
        received_at=1,
        quarantined_at=1,
        mail_from="eve@outside.example",
        recipients=("bob@example.com",),
        client_ip="192.0.2.1",
        helo="outside.example",
        sender="eve@outside.example",
        subject="held",
        raw_hash=raw_hash,
        raw_size=1,
        verdict="quarantine",
        score=0.0,
        reasons=(),
        filter_headers="",
    )


async def test_a_blob_something_names_is_never_freed(stack: Stack) -> None:
    sweep = stack.sweep()
    a, b = await new_box(stack.mailbox), await new_box(stack.mailbox)
    kept_by_copy = await deliver(stack, [a, b], mime("one copy left", os.urandom(300)))
    await delete_for_good(stack, kept_by_copy.copies[0])
    upload = await stack.blobs.put(os.urandom(5000))
    await stack.mailbox.create_upload(
        Upload(a.account_id, 1, "u.bin", "application/octet-stream", 5000, upload.hash, 0)
    )
    incoming = await stack.blobs.put(b"raw mail waiting for worker-in")
    await stack.queue.put("incoming", {"queue_id": "q1", "raw_hash": incoming.hash})
    outgoing = await stack.blobs.put(b"raw mail waiting for worker-out")
    await stack.queue.put(
        "outgoing", {"account_id": a.account_id, "message_id": 1, "raw_hash": outgoing.hash}
    )
    failed = await stack.blobs.put(b"raw mail that failed")
    await stack.queue.put("incoming", {"queue_id": "q2", "raw_hash": failed.hash})
    [item] = [i for i in await stack.queue.list("incoming") if i.payload["queue_id"] == "q2"]
    await stack.queue.dead_letter(item, error="kept for an operator")
    orphan = await stack.blobs.put(b"named by nothing")
    quarantined = await stack.blobs.put(b"raw mail held in quarantine")
    await stack.directory.quarantine(held_in_quarantine(quarantined.hash))
    released = await stack.blobs.put(b"raw mail released from quarantine, copies gone")
    entry = await stack.directory.quarantine(held_in_quarantine(released.hash))
    assert await stack.directory.set_quarantine_status(
        entry.id, expected=("held",), status="released", at=1
    )

    named = {
        *kept_by_copy.blobs,
        upload.hash,
        incoming.hash,
        outgoing.hash,
        failed.hash,
        quarantined.hash,
    }
    for _ in range(2):
        await asyncio.sleep(stack.grace)
        report = await sweep.run(limit=1000)
        assert not named & {*report.condemned, *report.purged}
    assert sorted(report.purged) == sorted([orphan.hash, released.hash])
    assert named <= await live(stack.blobs)
    for blob_hash, data in kept_by_copy.blobs.items():
        assert await stack.blobs.get(blob_hash) == data


async def test_a_sweep_racing_new_deliveries_of_the_same_content_never_loses_a_blob(
    stack: Stack,
) -> None:
    """Each round: mail delivered to two accounts and deleted for good there;
    then, the blobs old, half of them already condemned and past the grace,
    a sweep runs again and again while the same contents are delivered anew to
    a third account at random moments, each with a random pause between its
    blob writes and its commit. Every new copy must keep every blob it names;
    contents not delivered again must be freed."""
    sweep = stack.sweep()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    first, second, third = [await new_box(stack.mailbox) for _ in range(3)]
    for round_number in range(ROUNDS):
        contents = [
            mime(f"round {round_number} mail {i}", os.urandom(rng.choice((500, 140_000))))
            for i in range(8)
        ]
        old = [await deliver(stack, [first, second], raw) for raw in contents]
        for delivered in old:
            for copy in delivered.copies:
                await stack.mailbox.delete_message(copy.account_id, copy.id)
        await asyncio.sleep(stack.grace)
        # Half the contents condemned a grace ago: the race meets a purge for
        # those, a condemn for the others.
        for delivered in old[::2]:
            for blob_hash in delivered.blobs:
                await stack.blobs.condemn(blob_hash)
        await asyncio.sleep(stack.grace)

        again = sorted(rng.sample(range(len(contents)), len(contents) // 2))
        stop = asyncio.Event()

        async def sweeping(stop: asyncio.Event = stop) -> int:
            runs = 0
            while not stop.is_set():
                await sweep.run(limit=10_000)
                runs += 1
                await asyncio.sleep(rng.uniform(0, 0.01))
            return runs

        async def redeliver(i: int, contents: list[bytes] = contents) -> Delivered:
            await asyncio.sleep(rng.uniform(0, 0.15))
            return await deliver(stack, [third], contents[i], pause=rng.uniform(0, 0.1))

        sweeper = asyncio.create_task(sweeping())
        new = await asyncio.gather(*(redeliver(i) for i in again))
        stop.set()
        assert await sweeper >= 1

        for delivered in new:  # readable at every moment, condemned or not
            for blob_hash, data in delivered.blobs.items():
                assert await stack.blobs.get(blob_hash) == data
        await asyncio.sleep(stack.grace)
        await sweep.run(limit=10_000)
        await sweep.run(limit=10_000)
        alive = await live(stack.blobs)
        for delivered in new:
            for blob_hash, data in delivered.blobs.items():
                assert blob_hash in alive, f"round {round_number}: {blob_hash} not live"
                assert await stack.blobs.get(blob_hash) == data
        gone = [old[i] for i in range(len(contents)) if i not in again]
        await asyncio.sleep(stack.grace)
        await sweep.run(limit=10_000)
        for delivered in gone:
            for blob_hash in delivered.blobs:
                assert not await stack.blobs.exists(blob_hash), f"round {round_number}"
        # The new copies are deleted too: the next round starts from nothing.
        for delivered in new:
            for copy in delivered.copies:
                await stack.mailbox.delete_message(copy.account_id, copy.id)


async def test_the_periodic_sweep_continues_where_it_stopped(stack: Stack) -> None:
    orphans = {(await stack.blobs.put(os.urandom(100))).hash for _ in range(7)}
    await asyncio.sleep(stack.grace)
    sweeper = BlobSweeper(stack.sweep(), interval_seconds=3600, limit=3)
    condemned: list[str] = []
    for _ in range(3):  # 3 + 3 + 1 blobs: a whole pass in three bounded runs
        report = await sweeper.run_once()
        assert report is not None and report.examined <= 3
        condemned += report.condemned
    assert sweeper.after == ""
    assert sorted(condemned) == sorted(orphans)
    await asyncio.sleep(stack.grace)
    purged: list[str] = []
    for _ in range(3):
        report = await sweeper.run_once()
        assert report is not None and len(report.purged) <= 3
        purged += report.purged
    assert sorted(purged) == sorted(orphans)


async def test_a_dry_run_changes_nothing(stack: Stack) -> None:
    orphan = await stack.blobs.put(b"orphan")
    await asyncio.sleep(stack.grace)
    report = await stack.sweep().run(limit=100, dry_run=True)
    assert report.condemned == [orphan.hash]
    assert orphan.hash in await live(stack.blobs)
