"""SearchIndex contract, as a property: for random mailboxes and random
queries built from every operator, the index answers exactly what a
brute-force filter over all the messages answers
(``mailfleet.search.query.matches``), newest first, and never a message of
another account. Runs against every selected implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailfleet.ids import new_id
from mailfleet.proto.addresses import Address
from mailfleet.search.document import document_for
from mailfleet.search.query import Candidate, matches, parse
from mailfleet.search.service import resolve_folders, with_default_scope
from mailfleet.search.tokens import tokens
from mailfleet.storage.interfaces import (
    FOLDER_ROLES,
    Attachment,
    Folder,
    NewMessage,
)

from . import backends
from .implementations.mailbox import MailboxBackend

WORDS = ["budget", "review", "Müller", "muller", "회의를", "회의", "会議室", "lunch", "2026", "ok"]
PEOPLE = [
    Address("alice@example.com", "Alice Liddell"),
    Address("bob@corp.example", "Bob"),
    Address("jürgen@firma.example", "Jürgen Müller"),
    Address("minsu@corp.example", "김민수"),
]
DAY = 86_400_000
BASE = 1_767_225_600_000  # 2026-01-01
FOLDERS = ("inbox", "archive", "trash", "junk", "Projects")

text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)


@st.composite
def message(draw: st.DrawFn) -> dict[str, object]:
    return {
        "subject": draw(text),
        "body": draw(text),
        "sender": draw(st.sampled_from(PEOPLE)),
        "to": tuple(draw(st.lists(st.sampled_from(PEOPLE), max_size=2, unique=True))),
        "folder": draw(st.sampled_from(FOLDERS)),
        "is_read": draw(st.booleans()),
        "is_flagged": draw(st.booleans()),
        "attachments": tuple(
            draw(st.lists(st.sampled_from(["budget.pdf", "회의.docx"]), max_size=2))
        ),
        "day": draw(st.integers(0, 9)),
        # Midnight exactly, and the last millisecond of the day: the edges of before:/after:.
        "time": draw(st.sampled_from([0, 3_600_000, DAY - 1])),
    }


def _quote(words: str) -> str:
    return f'"{words}"'


term = st.one_of(
    st.sampled_from(WORDS),
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=2).map(" ".join).map(_quote),
    st.tuples(
        st.sampled_from(["from", "to", "subject"]),
        st.sampled_from([*WORDS, "alice", "corp.example", "jürgen", "김민수", "liddell"]),
    ).map(lambda p: f"{p[0]}:{p[1]}"),
    st.sampled_from(["is:read", "is:unread", "is:flagged", "has:attachment"]),
    st.sampled_from([f"in:{f}" for f in FOLDERS] + ["in:spam"]),
    st.tuples(st.sampled_from(["before", "after"]), st.integers(0, 10)).map(
        lambda p: f"{p[0]}:2026-01-{p[1] + 1:02d}"
    ),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map(" ".join),
        st.tuples(children, children).map(lambda p: f"{p[0]} OR {p[1]}"),
        children.map(lambda c: f"-{c}" if not c.startswith(("-", "(")) else c),
        children.map(lambda c: f"({c})"),
    )


query = st.recursive(term, _combine, max_leaves=5)


@pytest.fixture(scope="module", params=backends.params("search"))
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[asyncio.AbstractEventLoop, MailboxBackend]]:
    loop = asyncio.new_event_loop()
    data = Path(tmp_path_factory.mktemp("search-property"))
    opened = request.param.open(data)
    backend = loop.run_until_complete(opened.__aenter__())
    yield loop, backend
    loop.run_until_complete(opened.__aexit__(None, None, None))
    loop.close()


async def _mailbox(
    backend: MailboxBackend, messages: list[dict[str, object]]
) -> tuple[int, list[Folder], list[NewMessage]]:
    account_id = new_id()
    folders = [Folder(account_id, new_id(), role.capitalize(), role, 0, 0) for role in FOLDER_ROLES]
    folders.append(Folder(account_id, new_id(), "Projects", None, 0, 0))
    await backend.mailbox.create_mailbox(account_id, folders)
    by_name = {f.role or f.name: f for f in folders}
    copies = []
    for m in messages:
        message_id = new_id()
        copies.append(
            NewMessage(
                account_id=account_id,
                id=message_id,
                folder_id=by_name[str(m["folder"])].id,
                thread_id=message_id,
                received_at=BASE + int(str(m["day"])) * DAY + int(str(m["time"])),
                ingest_key=f"p:{message_id}",
                sender=m["sender"],  # type: ignore[arg-type]
                to=m["to"],  # type: ignore[arg-type]
                cc=(),
                bcc=(),
                subject=str(m["subject"]),
                snippet="",
                message_id_header=f"<{message_id}@test>",
                in_reply_to=None,
                references=(),
                raw_hash="0" * 64,
                raw_size=1,
                body_hash=None,
                html_hash=None,
                is_read=bool(m["is_read"]),
                is_flagged=bool(m["is_flagged"]),
                attachments=tuple(
                    Attachment(new_id(), name, "application/octet-stream", 1, "0" * 64)
                    for name in m["attachments"]  # type: ignore[attr-defined]
                ),
                body_text=str(m["body"]),
            )
        )
    await backend.mailbox.store_messages(copies)
    return account_id, folders, copies


def _candidate(copy: NewMessage) -> Candidate:
    document = document_for(copy)
    return Candidate(
        fields={
            "subject": document.subject.split(),
            "sender": document.sender.split(),
            "recipients": document.recipients.split(),
            "body": document.body.split(),
            "attachments": document.attachments.split(),
        },
        folder_id=copy.folder_id,
        is_read=copy.is_read,
        is_flagged=copy.is_flagged,
        has_attachments=bool(copy.attachments),
        received_at=copy.received_at,
    )


def _mail(
    subject: str, body: str, day: int = 0, time: int = 0, **extra: object
) -> dict[str, object]:
    return {
        "subject": subject,
        "body": body,
        "sender": PEOPLE[0],
        "to": (PEOPLE[1],),
        "folder": "inbox",
        "is_read": False,
        "is_flagged": False,
        "attachments": (),
        "day": day,
        "time": time,
        **extra,
    }


_EDGES = [
    _mail("budget", "review", 0, 0),
    _mail("budget", "lunch", 1, DAY - 1),
    _mail("ok", "ok", 2),
]


@example(messages=_EDGES, q="after:2026-01-01")
@example(messages=_EDGES, q="before:2026-01-02")
@example(messages=_EDGES, q="budget -review")
@example(messages=_EDGES, q="budget -(review OR lunch)")
@example(messages=_EDGES, q="review OR lunch")
@example(messages=_EDGES, q="-budget")
@example(messages=_EDGES, q="is:unread OR lunch")
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(message(), min_size=1, max_size=25), q=query)
def test_index_agrees_with_brute_force(
    store: tuple[asyncio.AbstractEventLoop, MailboxBackend],
    messages: list[dict[str, object]],
    q: str,
) -> None:
    loop, backend = store
    node = with_default_scope(parse(q))

    async def run() -> tuple[list[int], list[int]]:
        account_id, folders, copies = await _mailbox(backend, messages)
        # Another account with the same mail must never show up.
        await _mailbox(backend, messages)
        scope = resolve_folders(node, folders)
        found = await backend.search.search(
            account_id, node, folders=scope, limit=1000, before_id=None
        )
        expected = sorted(
            (c.id for c in copies if matches(node, _candidate(c), lambda v: scope[v])),
            reverse=True,
        )
        return [m.id for m in found], expected

    found, expected = loop.run_until_complete(run())
    assert found == expected, q


def test_tokens_of_a_query_word_match_inside_longer_cjk_words() -> None:
    assert tokens("회의") == ["회의"]
    assert tokens("회의를") == ["회의", "의를"]
    assert tokens("Straße") == tokens("strasse")
