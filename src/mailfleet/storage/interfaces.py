"""The storage interfaces every role talks to, and the records they carry.

Each interface has an embedded implementation (``storage/embedded``) and gets a
distributed one (``storage/distributed``: PostgreSQL, S3, NATS JetStream,
Redis) with no change here. Rules that make that possible:

- every mailbox record and every method is keyed by ``account_id`` first, so a
  mailbox lives on one shard and a user's request touches one shard;
- the directory (domains, accounts by address, sessions, DKIM keys) is the
  only global part, a role of its own (``DirectoryStore``); everything else
  of a mailbox is a ``MailboxStore`` (shardable by account) with its change
  log; search is a ``SearchIndex`` role, which an engine may fill in the same
  database as the mailbox (SQLite does, written in the same transaction);
- nothing here exposes a transaction, a connection or SQL: each method is one
  atomic step, and the few multi-record steps the flows need
  (``store_messages``, ``delete_folder``) are methods of their own;
- writes that a queue consumer repeats are idempotent (``ingest_key``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mailfleet.proto.addresses import Address

if TYPE_CHECKING:
    from mailfleet.search.query import Node as SearchNode

# -- records ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    open_signup: bool
    created_at: int  # ms since the Unix epoch, UTC


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A hosted domain's signing key, published at ``<selector>._domainkey``.
    Several per domain allow rotation; outgoing mail is signed with the newest."""

    domain: str
    selector: str
    private_key_pem: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    email: str
    name: str
    password_hash: str
    disabled: bool
    created_at: int
    # Sending held for review (outbound abuse): why; None while it may send.
    held_reason: str | None = None
    held_at: int | None = None
    released_at: int | None = None  # the last release of a hold


@dataclass(frozen=True, slots=True)
class Session:
    account_id: int
    token_hash: bytes
    expires_at: int


FOLDER_ROLES = ("inbox", "sent", "drafts", "junk", "trash", "archive")


@dataclass(frozen=True, slots=True)
class Folder:
    account_id: int
    id: int
    name: str
    role: str | None
    total: int
    unread: int


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored object: its content hash (sha256, hex) and size in bytes."""

    hash: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob as the lifecycle sweep sees it (decision 0018): its hash and
    ``at`` (ms), when it was written (a live blob) or condemned (a condemned
    one). Object stores keep whole seconds: ``at`` may be up to a second
    early, never late."""

    hash: str
    at: int


@dataclass(frozen=True, slots=True)
class Upload:
    """An attachment uploaded for a message not yet sent."""

    account_id: int
    id: int
    filename: str
    content_type: str
    size: int
    blob_hash: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Attachment:
    id: int
    filename: str
    content_type: str
    size: int
    blob_hash: str
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one recipient of a sent message stands."""

    email: str
    status: str  # delivered | queued | deferred | bounced
    detail: str = ""
    next_attempt_at: int | None = None


@dataclass(frozen=True, slots=True)
class StaleSend:
    """A sent message with recipients still ``queued`` long after it was
    stored: its ``outgoing`` items may never have been written (a crash
    between the two steps of the send flow)."""

    account_id: int
    message_id: int
    raw_hash: str
    mail_from: str
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What a folder listing shows: one row, no blob reads."""

    account_id: int
    id: int
    folder_id: int
    thread_id: int
    received_at: int
    sender: Address | None
    to: tuple[Address, ...]
    subject: str
    snippet: str
    is_read: bool
    is_flagged: bool
    has_attachments: bool


@dataclass(frozen=True, slots=True)
class SpamReason:
    """One rule a filter fired on a message, as stored and shown."""

    name: str
    score: float
    detail: str = ""


QUARANTINE_STATUSES = ("held", "releasing", "released", "deleted")


@dataclass(frozen=True, slots=True)
class QuarantinedMail:
    """An inbound mail a filter quarantined (a virus, a blocked attachment):
    kept, in no folder, until an administrator releases or deletes it.
    ``ingest_key`` is worker-in's for the mail (``in:<queue id>``): one entry
    per mail however often it is processed. While ``held`` or ``releasing``
    the entry names its raw blob (``raw_hash``), which the blob sweep keeps."""

    id: int
    ingest_key: str
    received_at: int  # ms, when the MX accepted it
    quarantined_at: int
    mail_from: str
    recipients: tuple[str, ...]
    client_ip: str
    helo: str
    sender: str  # the From field as shown
    subject: str
    raw_hash: str
    raw_size: int
    verdict: str
    score: float
    reasons: tuple[SpamReason, ...]
    filter_headers: str
    status: str = "held"  # QUARANTINE_STATUSES
    resolved_at: int | None = None  # when it was released or deleted


@dataclass(frozen=True, slots=True)
class Message:
    """One recipient's copy in full: the summary plus what the reader shows.

    Bodies live in the blob store (``body_hash``, ``html_hash``, ``raw_hash``),
    shared by every copy of the same mail.
    """

    summary: MessageSummary
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    message_id_header: str
    in_reply_to: str | None
    references: tuple[str, ...]
    raw_hash: str
    raw_size: int
    body_hash: str | None
    html_hash: str | None
    spam_verdict: str | None
    spam_score: float | None
    attachments: tuple[Attachment, ...]
    delivery: tuple[Delivery, ...]
    spam_reasons: tuple[SpamReason, ...] = ()
    # Lines the filters added (Authentication-Results, X-Spam-*), CRLF-ended,
    # shown before the raw mail: the raw blob stays as received.
    filter_headers: str = ""
    # What the Bayes classifier was taught this copy is: "spam", "ham", None.
    bayes_trained: str | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A copy to store in one account's folder.

    ``ingest_key`` makes the write idempotent: storing a second copy with the
    same (account_id, ingest_key) returns the first one's id instead.
    """

    account_id: int
    id: int
    folder_id: int
    thread_id: int  # the store assigns the thread: pass ``id``
    received_at: int
    ingest_key: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    subject: str
    snippet: str
    message_id_header: str
    in_reply_to: str | None
    references: tuple[str, ...]
    raw_hash: str
    raw_size: int
    body_hash: str | None
    html_hash: str | None
    is_read: bool = False
    is_flagged: bool = False
    spam_verdict: str | None = None
    spam_score: float | None = None
    spam_reasons: tuple[SpamReason, ...] = ()
    filter_headers: str = ""
    attachments: tuple[Attachment, ...] = ()
    delivery: tuple[Delivery, ...] = ()
    # The text the reader sees, for the search index (the body itself is a blob).
    body_text: str = ""


@dataclass(frozen=True, slots=True)
class SearchDocument:
    """One message as the search index holds it: each field already cut into
    ``mailfleet.search.tokens``, joined by spaces."""

    account_id: int
    message_id: int
    subject: str
    sender: str
    recipients: str
    body: str
    attachments: str


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change to a mailbox, numbered by the account's sequence.

    ``kind`` is what changed: ``message.new``, ``message.updated``,
    ``message.deleted`` (``data``: ``id``, ``folder_id`` and what changed),
    ``folder.updated`` (``data``: ``id``, ``name``, ``role``, ``total``,
    ``unread``; ``deleted: true`` when it is gone). A folder's counts change
    with the messages in it, so every message change that moves a count is
    followed, in the same transaction, by that folder's ``folder.updated``.
    """

    seq: int
    kind: str
    data: dict[str, Any]
    at: int  # ms since the Unix epoch, UTC


@dataclass(frozen=True, slots=True)
class ChangePage:
    """``MailboxStore.changes``: the changes after a cursor, in order.

    ``head`` is the account's newest sequence number when read. ``reset`` is
    true when the cursor is older than what the log keeps (or not one of this
    account's): the caller refetches its state and continues from ``head``.
    """

    changes: list[Change]
    head: int
    reset: bool = False


@dataclass(frozen=True, slots=True)
class ListCursor:
    """Keyset position: the last row seen, in (received_at, id) descending order."""

    received_at: int
    id: int


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """One row of a folder listing grouped by thread: the thread's newest
    message in that folder, and how many messages the thread holds in all
    folders."""

    latest: MessageSummary
    count: int


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Of the trained mails (of one account, or global), how many spam and
    how many ham ones held a token, or how many there were in all."""

    spam: int = 0
    ham: int = 0


@dataclass(frozen=True, slots=True)
class BayesStatistics:
    """What ``BayesStore.statistics`` read for one mail to one account: the
    account's totals and the global ones (with how many accounts trained
    them), and the counts of the tokens asked that either has seen. Token
    counts are only read when the account or the global has trained
    anything: empty otherwise."""

    account: TokenCounts
    global_: TokenCounts
    global_accounts: int
    account_tokens: Mapping[str, TokenCounts]
    global_tokens: Mapping[str, TokenCounts]


@dataclass(frozen=True, slots=True)
class Training:
    """Teach the classifier that one of the account's messages is ``label``
    (``"spam"`` or ``"ham"``), from its ``tokens`` (distinct). A message
    trained as the other label is untrained from it first, with the same
    tokens (the tokenizer is deterministic); one trained as ``label``
    already is left as it is; with ``only_untrained`` a message trained as
    anything is left as it is."""

    message_id: int
    label: str
    tokens: tuple[str, ...]
    only_untrained: bool = False


@dataclass(frozen=True, slots=True)
class MessagePatch:
    is_read: bool | None = None
    is_flagged: bool | None = None
    folder_id: int | None = None


# -- interfaces -----------------------------------------------------------------


class DirectoryStore(Protocol):
    """The global part: hosted domains and their DKIM keys, accounts by
    address, sessions. Raises ``storage.errors.DuplicateKey`` for taken unique
    keys and ``storage.errors.BackendUnavailable`` when the backend cannot be
    reached (as every store does)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def add_domain(self, domain: Domain) -> None: ...
    async def get_domain(self, name: str) -> Domain | None: ...
    async def list_domains(self) -> list[Domain]: ...
    async def set_domain_signup(self, name: str, open_signup: bool) -> None: ...
    async def add_dkim_key(self, key: DkimKey) -> None:
        """Raises DuplicateKey when the domain already has that selector."""
        ...

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        """The domain's keys, newest first."""
        ...

    async def create_account(self, account: Account) -> None:
        """Raises DuplicateKey when the address is taken. The account's
        mailbox (``MailboxStore.create_mailbox``) is made first: an account
        the directory shows always has one."""
        ...

    async def get_account(self, account_id: int) -> Account | None: ...
    async def get_account_by_email(self, email: str) -> Account | None: ...
    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...
    async def update_account(
        self, account_id: int, *, password_hash: str | None = None, disabled: bool | None = None
    ) -> None: ...
    async def set_hold(self, account_id: int, reason: str | None) -> bool:
        """Holds the account's sending for review with ``reason`` (None:
        releases it, and records when in ``released_at``). True when this
        changed the hold (a second hold keeps the first reason and time, and
        answers False)."""
        ...

    async def create_session(self, session: Session) -> None: ...
    async def get_session(self, account_id: int, token_hash: bytes) -> Session | None: ...
    async def delete_session(self, account_id: int, token_hash: bytes) -> None: ...
    async def delete_sessions(self, account_id: int) -> None: ...

    # quarantine: global, so administrators list it across every account
    async def quarantine(self, mail: QuarantinedMail) -> QuarantinedMail:
        """Keeps ``mail`` unless an entry with its ``ingest_key`` exists
        (whatever its status: a mail released or deleted is not held again
        when worker-in sees it once more); answers the entry stored."""
        ...

    async def get_quarantined(self, quarantine_id: int) -> QuarantinedMail | None: ...
    async def list_quarantined(
        self, *, status: str | None = "held", before: int | None = None, limit: int = 100
    ) -> list[QuarantinedMail]:
        """Newest first (by id); ``status`` None: every status; ``before``: ids
        below it (the next page)."""
        ...

    async def set_quarantine_status(
        self, quarantine_id: int, *, expected: Sequence[str], status: str, at: int
    ) -> bool:
        """Moves the entry to ``status`` if it is in one of ``expected``;
        whether this call moved it (two administrators racing: one wins)."""
        ...

    async def quarantine_blob_references(self, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` an entry still held (or being released) names:
        the blob sweep keeps them (decision 0018)."""
        ...


class MailboxStore(Protocol):
    """Everything of a mailbox, every method keyed by ``account_id``: folders,
    messages, threads, delivery status of sent mail, uploads, and the
    account's change log.

    Every change to folders or messages takes the account's next sequence
    numbers in the change log in the same transaction (``changes``), so a
    reader that resumes from its last sequence number misses nothing and sees
    nothing twice. After the commit, the store calls the ``on_commit``
    callback it was built with (``{account_id: newest sequence number}``):
    the event bus wakes whoever watches those accounts. Methods of another
    account's folder or message find nothing and change nothing.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def create_mailbox(self, account_id: int, folders: Sequence[Folder]) -> None:
        """The account's first folders and an empty change log; doing it again
        for the same account changes nothing."""
        ...

    # folders
    async def list_folders(self, account_id: int) -> list[Folder]: ...
    async def get_folder(self, account_id: int, folder_id: int) -> Folder | None: ...
    async def folder_by_role(self, account_id: int, role: str) -> Folder: ...
    async def create_folder(self, folder: Folder) -> None:
        """Raises DuplicateKey when the account has a folder of that name."""
        ...

    async def rename_folder(self, account_id: int, folder_id: int, name: str) -> None: ...
    async def delete_folder(self, account_id: int, folder_id: int, move_to: int) -> None:
        """Moves the folder's mail to ``move_to``, then removes the folder."""
        ...

    # messages
    async def store_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        """Stores every copy atomically (ids returned in order; an already
        stored ``(account_id, ingest_key)`` answers the existing id and adds
        nothing). Each new copy is placed in its thread by ``threadkeys``
        rules (its ``thread_id`` is replaced), merging threads it links, in
        the same transaction; it is searchable (``SearchIndex``) once this
        returns."""
        ...

    async def list_messages(
        self,
        account_id: int,
        folder_id: int,
        *,
        is_read: bool | None,
        limit: int,
        after: ListCursor | None,
    ) -> list[MessageSummary]:
        """Newest first by ``(received_at, id)``, after the keyset cursor."""
        ...

    async def get_message(self, account_id: int, message_id: int) -> Message | None: ...
    async def find_by_message_id_header(
        self, account_id: int, header: str
    ) -> MessageSummary | None: ...

    async def thread_messages(
        self, account_id: int, thread_id: int, *, limit: int
    ) -> list[MessageSummary]:
        """The thread's messages in every folder, oldest first."""
        ...

    async def list_threads(
        self,
        account_id: int,
        folder_id: int,
        *,
        is_read: bool | None,
        limit: int,
        after: ListCursor | None,
    ) -> list[ThreadSummary]:
        """One row per thread with a message in the folder, by its newest
        message there (keyset order and cursor as ``list_messages``)."""
        ...

    async def update_message(
        self, account_id: int, message_id: int, patch: MessagePatch
    ) -> MessageSummary | None: ...
    async def delete_message(self, account_id: int, message_id: int) -> bool: ...

    # delivery status of sent mail (the Sent copy's recipients)
    async def set_deliveries(
        self, account_id: int, message_id: int, updates: Sequence[Delivery]
    ) -> None:
        """Where recipients of a sent message stand now (by ``email``);
        clears their claims (``claim_deliveries``)."""
        ...

    async def get_deliveries(self, account_id: int, message_id: int) -> list[Delivery]:
        """Every recipient's standing; empty when the message is gone."""
        ...

    async def claim_deliveries(
        self,
        account_id: int,
        message_id: int,
        emails: Sequence[str],
        *,
        claimant: str,
        now_ms: int,
        until_ms: int,
    ) -> list[Delivery]:
        """Atomically takes, of ``emails``, the recipients still to try
        (``queued`` or ``deferred``) that no other attempt holds: unclaimed,
        claimed until ``now_ms`` or earlier, or claimed by ``claimant``
        itself (an earlier attempt of the same queue item that could not
        clear its claim). Marks them claimed by ``claimant`` until
        ``until_ms`` and returns them as they stand; ``set_deliveries``
        clears the claim. worker-out claims before it sends and sends only
        to what it got, so two queue items for the same recipients never
        deliver side by side."""
        ...

    async def stale_sends(self, received_before: int, limit: int) -> list[StaleSend]:
        """Sent messages stored before ``received_before`` (ms) that still have
        recipients ``queued``, across accounts (on a sharded store: across the
        shards this process serves)."""
        ...

    # uploads
    async def create_upload(self, upload: Upload) -> None: ...
    async def get_upload(self, account_id: int, upload_id: int) -> Upload | None: ...

    async def blob_references(self, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` any row names, in every account (on a sharded
        store: on every shard): a message's raw mail, text or HTML body, an
        attachment, an upload. Read from the primary: the blob sweep frees
        what this does not return (decision 0018)."""
        ...

    # change log
    async def changes(self, account_id: int, after: int, *, limit: int) -> ChangePage:
        """The account's changes with a sequence number above ``after``, in
        order, at most ``limit``. The log keeps a bounded number of recent
        changes per account; a cursor older than the oldest kept (or newer
        than the head: not this account's) answers ``reset``, never a gap."""
        ...

    async def head(self, account_id: int) -> int:
        """The account's newest sequence number (0 before its first change).
        Every change to its folders, messages or deliveries moves it, so what
        a reader built from the account's state at one head stays true until
        the head moves (the API's page cache relies on it). Read from where
        listings are read (a shard's replica, when it has one), so a listing
        read after it never shows an older state than this head."""
        ...


class BayesStore(Protocol):
    """The Bayes classifier's token statistics (decision 0022): per account,
    beside its mailbox (the account's shard), and global, where the
    account's own are (on PostgreSQL: the shard's accounts together).
    Training changes the account's statistics and the global ones, and
    records on the message what it was trained as, in one transaction: a
    training repeated (a retried request, a second move into Junk) counts
    once. Counts never go below zero."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def statistics(self, account_id: int, tokens: Sequence[str]) -> BayesStatistics:
        """The account's and the global totals, and, when either has
        trained anything, the counts of ``tokens`` (one read of each)."""
        ...

    async def train(self, account_id: int, trainings: Sequence[Training]) -> list[str | None]:
        """Applies each training in order, in one transaction; answers what
        each message was trained as before (None: nothing, or no such
        message of the account, which is left alone)."""
        ...


class BlobStore(Protocol):
    """Immutable objects named by the sha256 of their content. Writing the same
    content twice stores it once. A write returns only once it is durable."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def put(self, data: bytes) -> Blob: ...
    async def put_stream(self, chunks: AsyncIterator[bytes], max_size: int) -> Blob:
        """Raises ``storage.errors.BlobTooLarge`` past ``max_size`` bytes,
        leaving nothing behind."""
        ...

    async def get(self, blob_hash: str) -> bytes: ...
    def stream(self, blob_hash: str, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...
    async def exists(self, blob_hash: str) -> bool: ...
    async def delete(self, blob_hash: str) -> None:
        """Removes the blob at once, condemned copy included. Only for blobs
        nothing can name (tests, a failed write): freeing mail goes through
        the sweep (``condemn``, then ``purge``), which is safe with sharing."""
        ...

    # The lifecycle (decision 0018): a blob nothing names is condemned, kept
    # aside for a grace period, then purged unless something names it again.
    async def list_blobs(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Live blobs with a hash above ``after`` (``""``: from the start), in
        hash order, at most ``limit``, each with when it was written."""
        ...

    async def condemn(self, blob_hash: str) -> None:
        """Sets a live blob aside: ``get``, ``stream`` and ``exists`` still
        find it, but a ``put`` of the same content no longer sees it and
        stores it live again. A blob not live is left alone."""
        ...

    async def list_condemned(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Condemned blobs above ``after`` in hash order, each with when it
        was condemned."""
        ...

    async def restore(self, blob_hash: str) -> None:
        """A condemned blob something names after all: live again, written
        now as far as ``list_blobs`` tells."""
        ...

    async def purge(self, blob_hash: str, *, condemned_before: int) -> bool:
        """Deletes the condemned copy of a blob if it was condemned at or
        before ``condemned_before`` (ms); True when one was deleted. A live
        copy is never touched."""
        ...


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """What one queue guarantees, fixed when the queue store is built (not
    per call): JetStream keeps these on the stream and its consumer."""

    lease_seconds: float = 60.0
    """How long a fetched item is held for its consumer before it is
    delivered again (JetStream: the consumer's ``ack_wait``)."""
    max_deliveries: int = 10
    """Deliveries an item gets; the one after the last goes to ``error``
    instead (JetStream: counted from ``num_delivered``; the consumer's own
    ``max_deliver`` is left unlimited, see ``Queue.fetch``)."""
    dedupe_window_seconds: float = 120.0
    """How long a ``dedupe_key`` is remembered (JetStream: the stream's
    ``duplicate_window``)."""


def new_queue_item_id(now_ms: int) -> str:
    """A queue item's id: its time first (hex milliseconds), so ids sort in
    the order items were put, then 48 random bits."""
    return f"{now_ms:013x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class QueueItem:
    queue: str
    id: str
    payload: dict[str, Any]
    attempts: int
    """Deliveries so far, the one that returned it included (JetStream:
    ``num_delivered`` of the delivery metadata). Exact on fetched items; on
    ``list``/``get`` as far as the queue can tell without delivering it
    (JetStream: 0, the stream keeps no delivery state)."""
    enqueued_at: int
    """When it was first put (ms); ``replay`` and ``retry_now`` keep it."""
    not_before: int
    """Fetched: when the lease runs out (ms). Waiting: when it is due, as
    far as the queue can tell (JetStream: a delayed put's due time, else the
    time it was put; a retry's delay is the consumer's, not visible)."""
    last_error: str = ""
    """Items on ``error`` only: why they are there."""
    origin: str = ""
    """Items on ``error`` only: the queue they failed on."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    oldest_age_seconds: float


class Queue(Protocol):
    """Durable work queues (``incoming``, ``outgoing``, ``error``), one
    ``QueuePolicy`` each. Every guarantee below is one NATS JetStream 2.9 can
    give without a store on the side (decision 0009): one work-queue stream
    per queue, one subject per item, one durable pull consumer.

    Delivery is at least once: a fetched item comes back after its lease
    unless it is acked, retried or dead-lettered, so consumers must be
    idempotent. An ack, retry or dead letter after the lease ran out may
    land on an item already delivered again.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    def policy(self, queue: str) -> QueuePolicy:
        """The queue's guarantees (JetStream: stream and consumer config)."""
        ...

    async def put(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        delay_seconds: float = 0,
    ) -> str:
        """Stores an item durably and returns its id. A ``dedupe_key`` put on
        the same queue within the queue's dedupe window makes this a no-op
        answering the first put's id, whether or not that item is still
        there; after the window the same key is accepted again, so a caller
        repeating itself later must not count on it (JetStream:
        ``Nats-Msg-Id`` and the stream's ``duplicate_window``). A delayed
        item is not delivered before ``delay_seconds`` have passed, and the
        wait counts as no delivery (JetStream 2.9 has no delayed publish:
        the item goes on the queue's delay subject with its due time, a
        consumer of that subject naks it until then and moves it onto the
        item subject when it is due)."""
        ...

    async def fetch(self, queue: str, *, limit: int, timeout: float) -> list[QueueItem]:
        """Waits up to ``timeout`` seconds for an item to be due and returns
        up to ``limit`` due items, each leased to the caller for the queue's
        ``lease_seconds`` and counted as a delivery; ``[]`` after the timeout.
        An item that would be delivered beyond ``max_deliveries`` is not
        returned: the queue moves it to ``error`` with the reason "gave up
        after N deliveries (last lease expired)" (JetStream: its
        ``max_deliver`` would strand the message in the stream with only an
        advisory, so the consumer is unlimited and the queue dead-letters it
        on that delivery)."""
        ...

    async def ack(self, item: QueueItem) -> None:
        """Done: the item is gone (JetStream: ack; the work-queue stream
        deletes it)."""
        ...

    async def ack_many(self, items: Sequence[QueueItem]) -> None:
        """``ack`` for a batch, in one round trip where the backend allows
        (SQLite: one statement in one commit; JetStream: acks sent together,
        then one flush)."""
        ...

    async def retry(self, item: QueueItem, *, delay_seconds: float) -> None:
        """Not done: deliver it again after ``delay_seconds`` (JetStream:
        ``nak`` with that delay). An item already at ``max_deliveries`` goes
        to ``error`` now with "gave up after N deliveries (last retried)".
        No reason is kept on a live item (a nak carries no text): a consumer
        that wants its reason seen writes it where it belongs (worker-out:
        the Sent copy's delivery rows), or dead-letters the item itself."""
        ...

    async def retry_now(self, queue: str, item_id: str) -> str | None:
        """Makes a waiting item due now: a copy under a new id, attempts
        from 0, ``enqueued_at`` and payload kept, and the original removed;
        returns the new id, or None when there is no such item. An original
        in flight is not stopped: its ack no longer touches the copy, which
        may run beside it (consumers are idempotent; worker-out's recipient
        claims keep it from sending twice). JetStream: stream get of the
        item's subject, publish to a new subject, purge the old one."""
        ...

    async def dead_letter(self, item: QueueItem, *, error: str) -> None:
        """Moves the item to ``error`` with its payload, ``error`` as
        ``last_error`` and its queue as ``origin`` (JetStream: publish to the
        error stream with both as headers, then ack the original)."""
        ...

    async def list(self, queue: str, *, limit: int = 100) -> list[QueueItem]:
        """Items on the queue, leased and delayed ones included, oldest first
        (JetStream: stream messages by sequence)."""
        ...

    async def get(self, queue: str, item_id: str) -> QueueItem | None:
        """One item (JetStream: stream get, last message of the item's
        subject)."""
        ...

    async def replay(self, item_id: str) -> bool:
        """Puts an ``error`` item back on its ``origin``, due now, with its id,
        payload and ``enqueued_at``, attempts from 0; never deduped. False
        when there is no such item (JetStream: stream get from the error
        stream, publish without ``Nats-Msg-Id``, delete by sequence)."""
        ...

    async def remove(self, queue: str, item_id: str) -> bool:
        """Drops one item, leased or not; False when it was not there
        (JetStream: purge the item's subject)."""
        ...

    async def purge(self, queue: str) -> int:
        """Drops every item; returns how many (JetStream: stream purge)."""
        ...

    async def stats(self, queue: str) -> QueueStats:
        """Items on the queue (leased and delayed ones included) and the age
        of the oldest by ``enqueued_at`` (JetStream: stream info, and the
        first message's enqueued-at header)."""
        ...


class SearchIndex(Protocol):
    """Full-text search over one account's mail, newest first.

    A message is searchable once ``MailboxStore.store_messages`` returns
    (an engine that keeps the index in the mailbox's database writes it in the
    same transaction). A search sees the message as it is now: moved, flagged,
    read or deleted mail is found (or not) by its current state, with no index
    write by the caller. What matches is ``search.query.matches`` over the
    fields of ``search.document``: the contract suite checks it against that
    brute-force definition.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def search(
        self,
        account_id: int,
        query: SearchNode,
        *,
        folders: Mapping[str, frozenset[int]],
        limit: int,
        before_id: int | None,
    ) -> list[MessageSummary]:
        """Messages matching ``query`` (``folders`` resolves each ``in:``
        value to folder ids), ids below ``before_id``, newest first."""
        ...

    async def index(self, documents: Sequence[SearchDocument]) -> int:
        """Indexes the documents of messages not indexed yet (rebuild);
        returns how many were added."""
        ...

    async def clear(self) -> None:
        """Empties the index of every account (before a full rebuild)."""
        ...


class Cache(Protocol):
    """Short-lived shared state: sessions, recent mail, rate-limit counters.
    A key lives ``ttl_seconds`` from its write; nothing here is durable."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def incr(self, key: str, ttl_seconds: float) -> tuple[int, float]:
        """Adds one to a counter that lives ``ttl_seconds`` from its first
        increment; returns the new count and the seconds it has left."""
        ...


class EventBus(Protocol):
    """Wake-ups: "account N has changes up to M". Never the source of truth:
    a listener reads what changed from ``MailboxStore.changes``; a wake-up
    lost or late delays a reader, never loses it anything. Delivered to every
    process that watches the account (embedded: the processes sharing a data
    directory; distributed: NATS subjects or Redis pub/sub)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def publish(self, heads: Mapping[int, int]) -> None:
        """``{account_id: newest sequence number}`` after a commit."""
        ...

    def watch(self, account_id: int) -> AsyncIterator[int]:
        """The account's newest sequence numbers as wake-ups arrive,
        increasing; several wake-ups a listener has not read yet are
        coalesced into the newest."""
        ...

    def on_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        """Calls ``callback(head)`` for each wake-up of the account as it
        arrives, on the event loop, until ``off_wake``: what ``watch`` does
        without a task and an iterator per watcher (the realtime role follows
        thousands of accounts). The callback must not block or raise."""
        ...

    def off_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        """Stops calling a callback given to ``on_wake`` (an equal one)."""
        ...

    async def publish_revoked(self, account_ids: Iterable[int]) -> None:
        """These accounts' sessions or standing changed (log out, new
        password, disabled): every process must stop trusting what it cached
        of them. Unlike a wake-up this is never dropped; on the embedded bus it
        is in every process's socket when this returns."""
        ...

    def on_revoked(self, callback: Callable[[int], None]) -> None:
        """Calls ``callback(account_id)`` for every revocation, this
        process's own included."""
        ...

    def catch_up(self) -> None:
        """Handles at once what has already arrived (a cheap non-blocking
        read): a cache checks this before trusting an entry, so that a
        revocation that reached the process is never missed by a request
        that started after it."""
        ...
