"""The change log and its wake-ups across processes: worker-in in its own
process stores a mail that came in over SMTP, and the API process reads it
from the account's change log, woken by the event bus."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib

from mailfleet.delivery.incoming_process import WorkerInProcess

from .conftest import DOMAIN, StartService


async def test_mail_stored_in_another_process_wakes_the_api_process(
    start_service: StartService,
) -> None:
    service = await start_service(roles=("api", "smtp-in"))
    alice = await service.user("alice")
    runtime = service.runtime
    account = await runtime.stores.directory.get_account_by_email(alice.email)
    assert account is not None
    worker = WorkerInProcess(runtime.settings)
    await worker.start()
    watch = runtime.stores.events.watch(account.id)
    woken = asyncio.ensure_future(anext(watch))
    try:
        start = (await runtime.stores.mailbox.changes(account.id, 0, limit=1)).head
        await aiosmtplib.send(
            b"From: bob@elsewhere.example\r\nTo: alice@" + DOMAIN.encode() + b"\r\n"
            b"Subject: across processes\r\nMessage-ID: <x1@elsewhere.example>\r\n\r\nhi\r\n",
            sender="bob@elsewhere.example",
            recipients=[alice.email],
            hostname="127.0.0.1",
            port=service.smtp_port,
            start_tls=False,
        )
        head = await asyncio.wait_for(woken, 15)
        woke_at = time.time() * 1000
        page = await runtime.stores.mailbox.changes(account.id, start, limit=100)
        new = [c for c in page.changes if c.kind == "message.new"]
        assert len(new) == 1 and head == page.head
        # The wake-up arrived within 100 ms of the child's commit.
        assert woke_at - new[0].at < 100, woke_at - new[0].at
        inbox = await alice.messages("inbox")
        assert [m["subject"] for m in inbox] == ["across processes"]
    finally:
        woken.cancel()
        await worker.stop()
