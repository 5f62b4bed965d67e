"""Thread rules as pure functions: subject normalization, reply markers,
usable Message-IDs, and the plan for a batch of new messages."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.storage.interfaces import NewMessage
from mailfleet.threadkeys import (
    MAX_REFERENCES,
    SUBJECT_WINDOW_MS,
    ThreadKey,
    has_reply_prefix,
    message_id_keys,
    normalize_subject,
    plan_threads,
    subject_key,
)

DAY = 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("subject", "normalized"),
    [
        ("Hello", "hello"),
        ("Re: Hello", "hello"),
        ("RE: re: Re:Hello", "hello"),
        ("Fwd: Re: Hello", "hello"),
        ("FW: AW: WG: SV: VS: Antw: Hello", "hello"),
        ("[team] Re: [team] Re: Hello", "hello"),
        ("Re[2]: Hello", "hello"),
        ("Re(3) : Hello", "hello"),
        ("Re： Hello", "hello"),
        ("  Re:   Hello \t  World  ", "hello world"),
        ("AW: Besprechung am Montag", "besprechung am montag"),
        ("Re: 회의 일정", "회의 일정"),
        ("Rebate: 50% off", "rebate: 50% off"),
        ("Réunion", "réunion"),
        ("Hello Re: there", "hello re: there"),
        ("Re:", ""),
        ("", ""),
    ],
)
def test_normalize_subject(subject: str, normalized: str) -> None:
    assert normalize_subject(subject) == normalized


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Re: Hello", True),
        ("Fwd: Hello", True),
        ("[list] AW: Hello", True),
        ("[list] Hello", False),
        ("Hello", False),
        ("Rebate: Hello", False),
        ("Hello re: x", False),
    ],
)
def test_reply_prefix(subject: str, reply: bool) -> None:
    assert has_reply_prefix(subject) is reply


@given(st.text())
def test_normalize_is_idempotent(subject: str) -> None:
    once = normalize_subject(subject)
    assert normalize_subject(once) == once


_WORDS = ["Re", "RE", "re", "Fwd", "FWD", "Fw", "AW", "aw", "WG", "SV", "VS", "Antw", "ANTW"]
prefix = st.one_of(
    st.builds(
        lambda word, count, space1, space2: f"{word}{space1}{count}:{space2}",
        st.sampled_from(_WORDS),
        st.sampled_from(["", "[2]", "(12)"]),
        st.sampled_from(["", " "]),
        st.sampled_from(["", " ", "  ", "\t"]),
    ),
    st.builds(
        lambda tag, space: f"[{tag}]{space}",
        st.text(st.characters(blacklist_characters="[]"), max_size=12),
        st.sampled_from(["", " "]),
    ),
)


@given(st.lists(prefix, max_size=30), st.text())
def test_prefixes_any_number_deep_are_stripped(prefixes: list[str], subject: str) -> None:
    assert normalize_subject("".join(prefixes) + subject) == normalize_subject(subject)


def test_message_id_keys_drop_garbage_and_keep_the_last_references() -> None:
    refs = [f"<r{i}@x>" for i in range(40)]
    keys = message_id_keys("<me@x>", "<parent@x>", ["garbage", "<>", "<a b@c>", "<@x>", *refs])
    assert keys == ["<me@x>", "<parent@x>", *refs[-MAX_REFERENCES:]]
    assert message_id_keys(None, "not-an-id", ["<x@y>", "<x@y>"]) == ["<x@y>"]
    assert message_id_keys("<" + "a" * 300 + "@x>", None, []) == []


def test_subject_key_only_for_a_subject() -> None:
    assert subject_key("Re: [x] Hello") == "subject:hello"
    assert subject_key("Re: ") is None


def _message(
    n: int,
    *,
    parent: int | None = None,
    refs: tuple[int, ...] = (),
    subject: str = "Chain",
    at: int = 0,
    account: int = 1,
) -> NewMessage:
    return NewMessage(
        account_id=account,
        id=1000 + n,
        folder_id=1,
        thread_id=1000 + n,
        received_at=at,
        ingest_key=str(n),
        sender=None,
        to=(),
        cc=(),
        bcc=(),
        subject=subject,
        snippet="",
        message_id_header=f"<m{n}@x>",
        in_reply_to=f"<m{parent}@x>" if parent else None,
        references=tuple(f"<m{r}@x>" for r in refs),
        raw_hash="",
        raw_size=0,
        body_hash=None,
        html_hash=None,
    )


def _deliver_one_by_one(messages: list[NewMessage]) -> list[int]:
    """Each message its own store call, stored keys carried over (merges
    applied) as the store would."""
    stored: dict[tuple[int, str], ThreadKey] = {}
    threads: dict[int, int] = {}
    for m in messages:
        plan = plan_threads([m], stored)
        for (_, absorbed), survivor in plan.merges.items():
            threads = {k: survivor if t == absorbed else t for k, t in threads.items()}
            stored = {
                k: replace(v, thread_id=survivor) if v.thread_id == absorbed else v
                for k, v in stored.items()
            }
        for row in (*plan.updates, *plan.inserts):
            stored[(row.account_id, row.ref)] = ThreadKey(row.thread_id, row.seen_at)
        threads[m.id] = plan.thread_ids[0]
    return [threads[m.id] for m in messages]


def test_out_of_order_chain_by_in_reply_to_only_merges_into_one_thread() -> None:
    chain = {n: _message(n, parent=n - 1 if n > 1 else None) for n in range(1, 6)}
    threads = _deliver_one_by_one([chain[n] for n in (3, 5, 1, 4, 2)])
    assert len(set(threads)) == 1
    # One batch in that order too.
    plan = plan_threads([chain[n] for n in (3, 5, 1, 4, 2)], {})
    assert len(set(plan.thread_ids)) == 1


def test_linking_stored_threads_merges_them_into_the_oldest() -> None:
    stored = {(1, "<m1@x>"): ThreadKey(7, 0), (1, "<m3@x>"): ThreadKey(5, 0)}
    plan = plan_threads([_message(2, parent=1, refs=(1,)), _message(4, parent=3)], stored)
    assert plan.thread_ids == [7, 5]
    both = plan_threads([_message(9, parent=3, refs=(1, 3))], stored)
    assert both.thread_ids == [5]
    assert both.merges == {(1, 7): 5}


def test_threads_never_cross_accounts() -> None:
    stored = {(1, "<m1@x>"): ThreadKey(7, 0)}
    plan = plan_threads([_message(2, parent=1, account=2)], stored)
    assert plan.thread_ids == [1002]
    assert not plan.merges


def test_subject_fallback_needs_a_reply_marker_and_the_window() -> None:
    stored = {(1, "subject:hello"): ThreadKey(7, 0)}

    def thread(subject: str, at: int, parent: int | None = None) -> int:
        return plan_threads(
            [_message(2, subject=subject, at=at, parent=parent)], stored
        ).thread_ids[0]

    assert thread("Hello", DAY) == 1002
    assert thread("Re: Hello", DAY) == 7
    assert thread("hello", DAY, parent=99) == 7  # In-Reply-To to a mail never received
    assert thread("Re: Hello", SUBJECT_WINDOW_MS) == 7
    assert thread("Re: Hello", SUBJECT_WINDOW_MS + 1) == 1002
    assert thread("Re: Goodbye", DAY) == 1002
