"""The MIME ingestion path, fuzzed: every pure step worker-in takes from a
received mail's bytes to what it stores (delivery/incoming.py ``accept`` and
``prepare``): our own Authentication-Results claims removed, the trace
fields, the MIME parse (headers, parts, attachments), the snippet, the
thread keys, the search document, the spam rules' and Bayes' view of it.

Seeded with real-world-looking mail (tests/support/mail_corpus.py) and the
ways it breaks. None of these steps may raise: ``parse_message`` is
documented never to (and not to fall back to its last-resort catch, which
``check_types`` rejects), and the raw mail is always kept whole: what is
stored is the trace fields followed by the mail byte for byte. Server-side
(the real worker-in on both profiles): tests/delivery/test_ingest_fuzz.py.
The long form: bench/fuzz.py."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings

from mailfleet.delivery.incoming import Envelope, IncomingService
from mailfleet.delivery.local import StoredParts, received_copy
from mailfleet.filters import MailToCheck
from mailfleet.filters.attachments import AttachmentPolicy
from mailfleet.filters.bayes import mail_tokens
from mailfleet.filters.rules import RULES
from mailfleet.filters.sender_auth import author_domains
from mailfleet.proto.authres import remove_claims_of
from mailfleet.proto.compose import SNIPPET_LENGTH
from mailfleet.proto.mime import ParsedMessage, parse_message
from mailfleet.search.document import document_for
from mailfleet.storage.interfaces import Attachment, NewMessage, SearchDocument
from mailfleet.threadkeys import keys_of
from tests.proto.test_mime import check_types
from tests.support.mail_corpus import SEEDS, any_mail

HOSTNAME = "mx.example.com"
FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Trace:
    """Just what ``IncomingService.trace_headers`` reads of the service."""

    hostname = HOSTNAME


def received(raw: bytes) -> bytes:
    """What the MX stores for ``raw``: as ``IncomingService.accept`` does."""
    envelope = Envelope("sender@example.org", ["alice@example.com"], "192.0.2.7", "client", False)
    trace = IncomingService.trace_headers(
        _Trace(),  # type: ignore[arg-type]
        envelope,
        "q1",
        datetime(2026, 12, 2, tzinfo=UTC),
    )
    return trace + remove_claims_of(raw, HOSTNAME)


def ingest(stored: bytes) -> tuple[ParsedMessage, NewMessage, SearchDocument]:
    """worker-in's pure work on one stored mail, as ``prepare`` and the store do it."""
    parsed = parse_message(stored)
    check_types(parsed)
    mail = MailToCheck(
        stored, "sender@example.org", ("alice@example.com",), "in", parsed_message=parsed
    )
    reasons = [reason for rule in RULES for reason in rule(mail)]
    assert all(isinstance(r.score, float | int) for r in reasons)
    list(AttachmentPolicy().blocked(parsed.attachments))
    author_domains(stored)
    mail_tokens(
        parsed.subject, parsed.sender.email if parsed.sender else None, parsed.text, parsed.html
    )
    parts = StoredParts(
        attachments=tuple(
            Attachment(i, a.filename, a.content_type, len(a.data), "2" * 64, a.content_id, a.inline)
            for i, a in enumerate(parsed.attachments)
        ),
        body_hash="1" * 64,
        html_hash=None,
    )
    message = received_copy(
        parsed,
        parts,
        account_id=1,
        folder_id=3,
        received_at=0,
        ingest_key="in:q1",
        raw_hash="0" * 64,
        raw_size=len(stored),
        message_id_header=f"<q1@{HOSTNAME}>",
    )
    assert len(message.snippet) <= SNIPPET_LENGTH + 1
    assert "\n" not in message.snippet
    assert all(isinstance(key, str) and key for key in keys_of(message))
    return parsed, message, document_for(message)


def check_ingested(raw: bytes) -> None:
    stored = received(raw)
    # Nothing of the mail is lost on the way in: the trace, then the mail as sent.
    assert stored.endswith(raw)
    _, message, document = ingest(stored)
    assert message.raw_size == len(stored)
    for text in (document.subject, document.sender, document.body, document.attachments):
        text.encode("utf-8")


@FUZZ
@given(any_mail())
# Each seed whole: what every mutation starts from reads cleanly.
@example(SEEDS[0][1])
@example(SEEDS[1][1])
def test_ingestion_never_raises_and_keeps_the_raw_mail(raw: bytes) -> None:
    check_ingested(raw)


def test_seeds_read_as_a_reader_expects() -> None:
    """The seeds are the mail they claim to be (else the fuzzing starts
    from noise): decoded subjects, bodies and attachments."""
    parsed = {name: ingest(received(raw))[0] for name, raw in SEEDS}
    assert parsed["alternative"].subject == "Angebote für Sie"
    assert "Grüße" in parsed["alternative"].text
    assert parsed["alternative"].html is not None and "script" not in parsed["alternative"].html
    nested = parsed["nested"]
    assert nested.in_reply_to == "<report-7@example.org>"
    assert [a.content_type for a in nested.attachments] == [
        "image/png",
        "application/pdf",
        "message/rfc822",
    ]
    assert nested.text.startswith("See the numbers attached.")
    assert parsed["korean"].subject == "회의 안내"
    assert parsed["korean"].text.startswith("다음 주 회의는")
    assert parsed["eight-bit"].subject.startswith("Café")
