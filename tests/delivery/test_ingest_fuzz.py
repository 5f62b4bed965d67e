"""Broken mail through the real MX acceptance and worker-in, on each storage
profile: mail drawn from tests/support/mail_corpus.py (mutated real-world
mail, encoded-words in many charsets, broken transfer encodings and
boundaries, huge header fields, random bytes) is accepted, delivered to the
Inbox or Junk, readable through the API, and its raw source is kept byte for
byte; nothing goes to the error queue. The pure steps are fuzzed with many
more examples in tests/proto/test_ingest_fuzz.py."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings

from mailfleet.delivery.incoming import Envelope
from tests.conftest import Service, User
from tests.support.mail_corpus import SEEDS, any_mail

MAILS = 30


def draw_mails(count: int) -> list[bytes]:
    """``count`` distinct mails from the corpus strategies, the same every run."""
    drawn: dict[bytes, None] = {seed: None for _, seed in SEEDS if seed}

    @settings(
        max_examples=count * 3,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(any_mail())
    def collect(raw: bytes) -> None:
        if len(drawn) < count:
            drawn[raw] = None

    collect()
    return list(drawn)


async def _all_mail(user: User) -> list[dict[str, Any]]:
    return [*await user.messages("inbox", limit=200), *await user.messages("junk", limit=200)]


async def test_broken_mail_is_delivered_whole(service: Service, alice: User) -> None:
    mails = await asyncio.to_thread(draw_mails, MAILS)
    envelope = Envelope("sender@outside.example", [alice.email], "192.0.2.9", "fuzz.example", False)
    for raw in mails:
        await service.runtime.incoming.accept(envelope, raw)
    deadline = asyncio.get_running_loop().time() + 60
    while len(delivered := await _all_mail(alice)) < len(mails):
        assert asyncio.get_running_loop().time() < deadline, f"{len(delivered)} of {len(mails)}"
        assert await service.runtime.stores.queue.list("error") == []
        await asyncio.sleep(0.05)
    assert len(delivered) == len(mails)
    assert await service.runtime.stores.queue.list("error") == []
    sources = []
    for summary in delivered:
        full = await alice.client.get(f"/v1/messages/{summary['id']}")
        assert full.status_code == 200, full.text
        raw = await alice.client.get(f"/v1/messages/{summary['id']}/raw")
        assert raw.status_code == 200
        sources.append(raw.content)
    # Each mail's source is the trace fields, then the mail exactly as sent.
    for mail in mails:
        assert any(source.endswith(mail) for source in sources), mail[:200]
