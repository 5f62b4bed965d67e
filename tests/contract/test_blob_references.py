"""``MailboxStore.blob_references`` against every mailbox store: which blobs a
message (raw, text and HTML bodies, attachments) or an upload names, in any
account (on PostgreSQL: accounts on both shards), until it is deleted."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from mailfleet.ids import new_id
from mailfleet.storage.interfaces import Attachment, Upload
from mailfleet.storage.sql.mailbox_reads import REFERENCE_BATCH

from .implementations.mailbox import MailboxBackend
from .mailboxes import mail, new_box


def h(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def test_every_column_that_names_a_blob_is_a_reference(
    mailbox_backend: MailboxBackend,
) -> None:
    store = mailbox_backend.mailbox
    boxes = [await new_box(store) for _ in range(4)]  # spread over the shards
    copies = []
    for box in boxes:
        copy = replace(
            mail(box),
            raw_hash=h("raw"),
            body_hash=h("body"),
            html_hash=h("html"),
            attachments=(Attachment(new_id(), "a.pdf", "application/pdf", 3, h("attachment")),),
        )
        copies.append(copy)
    await store.store_messages(copies)
    upload = Upload(boxes[0].account_id, new_id(), "u.txt", "text/plain", 1, h("upload"), 0)
    await store.create_upload(upload)
    names = ["raw", "body", "html", "attachment", "upload", "nothing"]
    everything = {h(n) for n in names}
    assert await store.blob_references([h(n) for n in names]) == everything - {h("nothing")}
    # Still named while any account keeps a copy.
    for copy in copies[:-1]:
        assert await store.delete_message(copy.account_id, copy.id)
        assert await store.blob_references(sorted(everything)) == everything - {h("nothing")}
    assert await store.delete_message(copies[-1].account_id, copies[-1].id)
    # Deleted for good everywhere: only the upload still names its blob.
    assert await store.blob_references(sorted(everything)) == {h("upload")}


async def test_many_hashes_are_probed_in_batches(mailbox_backend: MailboxBackend) -> None:
    store = mailbox_backend.mailbox
    box = await new_box(store)
    wanted = [h(f"m{i}") for i in range(REFERENCE_BATCH * 2 + 7)]
    named = wanted[::3]
    await store.store_messages([replace(mail(box), raw_hash=x) for x in named])
    assert await store.blob_references(wanted) == set(named)
    assert await store.blob_references([]) == set()
    assert await store.blob_references([wanted[0], wanted[0]]) == {wanted[0]}
