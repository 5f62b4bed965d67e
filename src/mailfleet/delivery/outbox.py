"""The ``outgoing`` queue's items: one per sent message and destination
domain, the raw message by reference. Made in one place for the send flow and
for the sweep that re-queues sends a crash interrupted."""

from __future__ import annotations

from collections.abc import Iterable

from mailfleet.logs import TRACE_KEY
from mailfleet.storage.interfaces import Queue

OUTGOING = "outgoing"


async def queue_outgoing(
    queue: Queue,
    *,
    account_id: int,
    message_id: int,
    raw_hash: str,
    mail_from: str,
    recipients: Iterable[str],
    round_key: str = "",
    trace: str = "",
) -> None:
    """Queues ``recipients`` by domain. The dedupe key is the message, the
    domain and ``round_key``: the send flow (no round) repeating itself
    within the queue's dedupe window queues nothing new. The sweep passes
    the sweep round, so that its items never depend on the send flow's key,
    whose item may be gone while the key is still remembered; sweeps of one
    round in several worker-out processes dedupe each other. A send queued
    twice this way is harmless: worker-out claims each recipient before it
    sends (``MailboxStore.claim_deliveries``). ``trace``: the send's
    correlation id, carried to worker-out's log lines (decision 0029); the
    sweep has none to give."""
    by_domain: dict[str, list[str]] = {}
    for email in recipients:
        by_domain.setdefault(email.rpartition("@")[2], []).append(email)
    for domain, emails in sorted(by_domain.items()):
        await queue.put(
            OUTGOING,
            {
                "account_id": account_id,
                "message_id": message_id,
                "raw_hash": raw_hash,
                "mail_from": mail_from,
                "domain": domain,
                "recipients": emails,
                **({TRACE_KEY: trace} if trace else {}),
            },
            dedupe_key=f"{message_id}:{domain}{round_key}",
        )
