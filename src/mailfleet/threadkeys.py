"""Conversations: which thread a new message of an account joins (decision 0006).

Pure rules, no I/O, at the top of the package so that both the mailbox
service and the stores that apply them (``storage/sql/threads.py``,
``storage/embedded/sqlite_threads.py``) may import them without storage
depending on a service.

After JWZ's threading algorithm (https://www.jwz.org/doc/threading.html),
reduced to what can be decided on arrival with indexed lookups:

- Every Message-ID a message names (its own, In-Reply-To, and the last
  ``MAX_REFERENCES`` of References) is a *thread key* of its account, mapped to
  a thread. This is JWZ's id table kept in the store (``thread_keys``); a key
  that no received message has as its own is JWZ's empty container.
- A new message joins the thread its keys map to. A parent arriving after its
  children finds its own Message-ID already mapped by them, so arrival order
  does not matter. Keys that map to several threads link them: they merge
  into the oldest one (the smallest id; ids are time-ordered).
- Malformed ids are ignored (RFC 5322 section 3.6.4: ``<id-left@id-right>``).
- Subject fallback: a message that no key links, and that looks like a reply
  (a reply or forward prefix, or an In-Reply-To), joins the thread of the
  account's newest message with the same normalized subject when that one
  arrived within ``SUBJECT_WINDOW_MS``. A message without those markers never
  joins by subject: two unrelated mails titled "Hello" stay apart.

``plan_threads`` is pure: the store looks up the batch's keys, calls it, and
writes what it answers in the transaction that stores the messages, so
assignment and merges are atomic with the rows (``store_messages``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailfleet.storage.interfaces import NewMessage

# Only the newest references count: a long or hostile References field
# cannot make one message touch hundreds of keys (JWZ keeps them all; the
# last ones name the nearest ancestors, which is what links a thread).
MAX_REFERENCES = 20
MAX_ID_LENGTH = 250
SUBJECT_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_SUBJECT_KEY = 200
SUBJECT_KEY_PREFIX = "subject:"  # Message-ID keys always start with "<"

_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_REPLY_WORDS = r"re|fwd?|aw|wg|sv|vs|antw"
# One prefix: a [list-tag], or a reply/forward word with an optional count
# ("Re[2]:", "Re(2):") and a colon (ASCII or full-width), spaces allowed.
_PREFIX = re.compile(
    rf"\s*(?:(?P<tag>\[[^\[\]]*\])|(?:{_REPLY_WORDS})\s*(?:\[\d+\]|\(\d+\))?\s*[:：])",
    re.IGNORECASE,
)


def normalize_subject(subject: str) -> str:
    """The subject with every reply, forward and list-tag prefix removed (any
    number deep, any case), whitespace collapsed, case folded."""
    text = " ".join(subject.casefold().split())
    while match := _PREFIX.match(text):
        text = text[match.end() :]
    return text.strip()


def has_reply_prefix(subject: str) -> bool:
    """Whether the subject starts with a reply or forward prefix (list tags
    before it allowed). A list tag alone is no reply marker."""
    text = subject
    while match := _PREFIX.match(text):
        if match.group("tag") is None:
            return True
        text = text[match.end() :]
    return False


def looks_like_reply(subject: str, in_reply_to: str | None) -> bool:
    return in_reply_to is not None or has_reply_prefix(subject)


def valid_message_id(value: str | None) -> bool:
    return value is not None and len(value) <= MAX_ID_LENGTH and bool(_MSG_ID.fullmatch(value))


def message_id_keys(
    message_id: str | None, in_reply_to: str | None, references: Sequence[str]
) -> list[str]:
    """The Message-IDs that place a message in a thread: its own, its
    In-Reply-To and its last ``MAX_REFERENCES`` valid references, without
    duplicates or malformed ids."""
    candidates = [message_id, in_reply_to]
    valid_refs = [r for r in references if valid_message_id(r)]
    candidates.extend(valid_refs[-MAX_REFERENCES:])
    return [c for c in dict.fromkeys(candidates) if c is not None and valid_message_id(c)]


def subject_key(subject: str) -> str | None:
    normalized = normalize_subject(subject)[:MAX_SUBJECT_KEY].rstrip()
    return SUBJECT_KEY_PREFIX + normalized if normalized else None


def keys_of(message: NewMessage) -> list[str]:
    """Every thread key of a message the store must look up."""
    keys = message_id_keys(message.message_id_header, message.in_reply_to, message.references)
    subject = subject_key(message.subject)
    return [*keys, subject] if subject else keys


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """A stored key: the thread it names, and when the newest message that
    carried it arrived (what the subject window measures)."""

    thread_id: int
    seen_at: int


@dataclass(frozen=True, slots=True)
class KeyRow:
    account_id: int
    ref: str
    thread_id: int
    seen_at: int


@dataclass(slots=True)
class ThreadPlan:
    """What the store writes: each new message's thread (in batch order),
    stored threads that merge into another (``(account_id, absorbed) ->
    survivor``: update messages and keys of the absorbed thread), keys to
    insert, and stored keys to change."""

    thread_ids: list[int] = field(default_factory=list)
    merges: dict[tuple[int, int], int] = field(default_factory=dict)
    inserts: list[KeyRow] = field(default_factory=list)
    updates: list[KeyRow] = field(default_factory=list)

    def merge_groups(self) -> dict[tuple[int, int], list[int]]:
        """``(account_id, survivor) -> absorbed threads``: one statement per
        table and group."""
        groups: dict[tuple[int, int], list[int]] = {}
        for (account_id, absorbed), survivor in sorted(self.merges.items()):
            groups.setdefault((account_id, survivor), []).append(absorbed)
        return groups


def plan_threads(
    messages: Sequence[NewMessage], stored: Mapping[tuple[int, str], ThreadKey]
) -> ThreadPlan:
    """Threads for a batch of new messages, given the stored keys among
    ``keys_of`` theirs. Messages are placed in order, each seeing the keys of
    the ones before it, so two messages of one thread in one batch meet."""
    table: dict[tuple[int, str], ThreadKey] = dict(stored)
    survivor: dict[tuple[int, int], int] = {}  # union-find over (account, thread)

    def find(account_id: int, thread_id: int) -> int:
        while (nxt := survivor.get((account_id, thread_id))) is not None:
            thread_id = nxt
        return thread_id

    def union(account_id: int, threads: set[int]) -> int:
        roots = {find(account_id, t) for t in threads}
        keep = min(roots)
        for root in roots - {keep}:
            survivor[(account_id, root)] = keep
        return keep

    chosen: list[int] = []
    touched: dict[tuple[int, str], None] = {}  # keys to write, in order
    for m in messages:
        account_id = m.account_id
        id_keys = [
            (account_id, k)
            for k in message_id_keys(m.message_id_header, m.in_reply_to, m.references)
        ]
        found = {table[k].thread_id for k in id_keys if k in table}
        subject = subject_key(m.subject)
        subject_entry = table.get((account_id, subject)) if subject else None
        if found:
            thread_id = union(account_id, found)
        elif (
            subject_entry is not None
            and looks_like_reply(m.subject, m.in_reply_to)
            and abs(m.received_at - subject_entry.seen_at) <= SUBJECT_WINDOW_MS
        ):
            thread_id = find(account_id, subject_entry.thread_id)
        else:
            thread_id = m.id
        for k in id_keys:
            if k not in table:
                table[k] = ThreadKey(thread_id, m.received_at)
                touched[k] = None
        if subject and (subject_entry is None or m.received_at >= subject_entry.seen_at):
            table[(account_id, subject)] = ThreadKey(thread_id, m.received_at)
            touched[(account_id, subject)] = None
        chosen.append(thread_id)

    plan = ThreadPlan()
    plan.thread_ids = [find(m.account_id, t) for m, t in zip(messages, chosen, strict=True)]
    # Threads begun in this batch have no rows yet: nothing to update.
    stored_threads = {(account_id, key.thread_id) for (account_id, _), key in stored.items()}
    plan.merges = {key: find(*key) for key in survivor if key in stored_threads}
    for account_id, ref in touched:
        entry = table[(account_id, ref)]
        row = KeyRow(account_id, ref, find(account_id, entry.thread_id), entry.seen_at)
        (plan.updates if (account_id, ref) in stored else plan.inserts).append(row)
    return plan
