"""Import and export of one account's mail (decision 0027).

``ImportService`` stores mail from ``sources`` through the same ingestion as
delivered mail: ``parse_message``, the raw mail and ``store_parts`` into the
blob store, then ``MailboxStore.store_messages`` (threads, search index,
counters, change log and wake-ups in its transaction), a batch at a time.
It never runs the filters: the mail is the user's own archive. Each copy's
ingest key is ``import:<sha256 of the stored raw mail>``, so importing the
same mail again (a second run, a run resumed after an interruption, an
export imported back) answers the stored copy and adds nothing.

``ExportService`` writes a folder as an mboxrd file, oldest first, each
message's flags as ``Status``/``X-Status`` lines, to a temporary name that is
renamed into place once complete and fsync'd: an interrupted export leaves
whole files only, and running it again rewrites them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailfleet.delivery.local import received_copy, store_parts
from mailfleet.errors import Conflict
from mailfleet.ids import now_ms
from mailfleet.mailbox.service import MAX_FOLDER_NAME, MailboxService
from mailfleet.proto.mailfiles import (
    file_name_for,
    from_line,
    header_time,
    mbox_quote,
    role_for,
    split_header,
    status_headers,
    strip_state,
    to_lf,
)
from mailfleet.proto.mime import ParsedMessage, parse_message
from mailfleet.storage.interfaces import (
    BlobStore,
    Folder,
    ListCursor,
    MailboxStore,
    MessageSummary,
    NewMessage,
)
from mailfleet.transfer.sources import SourceMail

log = logging.getLogger(__name__)

IMPORT_KEY_PREFIX = "import:"
DEFAULT_BATCH = 500
# Blob writes in flight at once: enough to fill the embedded store's group
# commits and to overlap S3 round trips, few enough not to flood S3.
PUT_CONCURRENCY = 512
EXPORT_PAGE = 200
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(slots=True)
class ImportReport:
    """What an import did so far (updated as it goes, for progress)."""

    read: int = 0  # mails read from the source
    added: int = 0  # new copies stored
    present: int = 0  # already there (an earlier run, or twice in the source)
    deleted: int = 0  # marked deleted/expunged in the source: skipped
    folders_created: list[str] = field(default_factory=list)


def import_key(raw: bytes) -> str:
    """The ingest key of an imported mail: its content, so the same mail
    is stored once however often it is imported."""
    return IMPORT_KEY_PREFIX + hashlib.sha256(raw).hexdigest()


def clean_folder_name(name: str) -> str:
    """A source's folder name as one of ours: no control characters, no
    empty path parts, at most ``MAX_FOLDER_NAME`` characters."""
    name = "".join(ch for ch in name if ord(ch) >= 32 and ch != "\x7f")
    name = "/".join(part.strip() for part in name.split("/") if part.strip())
    return name[:MAX_FOLDER_NAME] or "Imported"


def parse_all(raws: list[bytes]) -> list[ParsedMessage]:
    """``parse_message`` of each mail: what the parser's process runs."""
    return [parse_message(raw) for raw in raws]


def _die_with(parent: int) -> None:
    """In the parser's process: ends it when the import's process ends, however
    (a SIGKILL leaves no chance to stop it), so that nothing is left running,
    holding the import's output open (Linux: ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before that was in place
        os._exit(0)


class ParseProcess:
    """``parse_message`` in a process of its own, a batch at a time.

    An import is Python under one GIL: parsing (the standard library's
    ``email`` package) is a quarter of its CPU, and the store, the blobs and
    the search tokens the rest. Parsing in a second process lets a second
    core take that quarter. Started with ``spawn``, not ``fork``: this
    process already runs threads (the SQLite writers) that a forked child
    would inherit mid-step; and not through a fork server, so that the
    parser is this process's child and ends with it. Worth it for big
    imports only: starting it and importing the parser take a few tenths of
    a second."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with,
            initargs=(os.getpid(),),
        )
        # Started now (the pool starts its process at the first task), so
        # that it starts while the import opens its stores and counts mails.
        self._pool.submit(parse_all, [])

    def parse(self, raws: list[bytes]) -> asyncio.Future[list[ParsedMessage]]:
        return asyncio.get_running_loop().run_in_executor(self._pool, parse_all, raws)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ParseProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parsed_ahead(
    batches: Iterator[list[SourceMail]], parser: ParseProcess | None
) -> Generator[tuple[list[SourceMail], asyncio.Future[list[ParsedMessage]] | None], None, None]:
    """Each batch with its parse (None without a parser): the next batch is
    read and its parse started in the parser's process before this one is
    handed over, so that it runs while this one is prepared and stored."""
    ahead: tuple[list[SourceMail], asyncio.Future[list[ParsedMessage]] | None] | None = None
    try:
        for chunk in batches:
            parsing = parser.parse([m.raw for m in chunk]) if parser is not None else None
            previous, ahead = ahead, (chunk, parsing)
            if previous is not None:
                yield previous
        if ahead is not None:
            last, ahead = ahead, None
            yield last
    finally:
        if ahead is not None and ahead[1] is not None:
            ahead[1].cancel()


class ImportService:
    """Stores mail from a source in one account, idempotently."""

    def __init__(
        self,
        mailbox: MailboxService,
        store: MailboxStore,
        blobs: BlobStore,
        hostname: str,
    ) -> None:
        self.mailbox = mailbox
        self.store = store
        self.blobs = blobs
        self.hostname = hostname
        self._folders: dict[str, int] = {}
        self._puts = asyncio.Semaphore(PUT_CONCURRENCY)

    async def run(
        self,
        account_id: int,
        mails: Iterable[SourceMail],
        *,
        batch: int = DEFAULT_BATCH,
        report: ImportReport | None = None,
        progress: Callable[[ImportReport], None] | None = None,
        parser: ParseProcess | None = None,
    ) -> ImportReport:
        """Imports every mail, ``batch`` per ``store_messages`` call; a batch
        is parsed while the one before it is being stored. ``report`` is
        updated after every batch (and handed to ``progress``). With a
        ``parser``, the mails are parsed in its process, a batch ahead of
        the one whose blobs are being written here."""
        report = report if report is not None else ImportReport()
        await self._load_folders(account_id)
        storing: asyncio.Task[None] | None = None
        batches = _parsed_ahead(self._batches(mails, batch, report), parser)
        try:
            for chunk, parsing in batches:
                parsed = await parsing if parsing is not None else None
                copies = await self._prepare(account_id, chunk, report, parsed)
                if storing is not None:
                    await storing
                storing = asyncio.create_task(self._store(copies, report, progress))
            if storing is not None:
                await storing
                storing = None
        finally:
            batches.close()  # cancels a parse still running
            if storing is not None:
                storing.cancel()
                await asyncio.gather(storing, return_exceptions=True)
        return report

    @staticmethod
    def _batches(
        mails: Iterable[SourceMail], size: int, report: ImportReport
    ) -> Iterator[list[SourceMail]]:
        chunk: list[SourceMail] = []
        for mail in mails:
            report.read += 1
            if mail.state.deleted:
                report.deleted += 1
                continue
            chunk.append(mail)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def _store(
        self,
        copies: list[NewMessage],
        report: ImportReport,
        progress: Callable[[ImportReport], None] | None,
    ) -> None:
        ids = await self.store.store_messages(copies) if copies else []
        added = sum(1 for copy, stored in zip(copies, ids, strict=True) if copy.id == stored)
        report.added += added
        report.present += len(copies) - added
        if progress is not None:
            progress(report)

    async def _prepare(
        self,
        account_id: int,
        mails: Sequence[SourceMail],
        report: ImportReport,
        parsed: Sequence[ParsedMessage] | None = None,
    ) -> list[NewMessage]:
        unique: dict[str, tuple[SourceMail, ParsedMessage | None]] = {}
        for i, mail in enumerate(mails):
            key = import_key(mail.raw)
            if key in unique:
                report.present += 1  # the same mail twice in one batch
            else:
                unique[key] = (mail, parsed[i] if parsed is not None else None)
        folder_ids = [
            await self._folder_id(account_id, m.folder, report) for m, _ in unique.values()
        ]
        return list(
            await asyncio.gather(
                *(
                    self._copy(account_id, folder_id, key, mail, done)
                    for (key, (mail, done)), folder_id in zip(
                        unique.items(), folder_ids, strict=True
                    )
                )
            )
        )

    async def _copy(
        self,
        account_id: int,
        folder_id: int,
        key: str,
        mail: SourceMail,
        parsed: ParsedMessage | None,
    ) -> NewMessage:
        if parsed is None:
            parsed = parse_message(mail.raw)
        async with self._puts:
            raw_blob, parts = await asyncio.gather(
                self.blobs.put(mail.raw), store_parts(self.blobs, parsed)
            )
        return received_copy(
            parsed,
            parts,
            account_id=account_id,
            folder_id=folder_id,
            received_at=parsed_time(mail),
            ingest_key=key,
            raw_hash=raw_blob.hash,
            raw_size=raw_blob.size,
            message_id_header=(
                f"<{key.removeprefix(IMPORT_KEY_PREFIX)[:32]}@import.{self.hostname}>"
            ),
            is_read=mail.state.seen,
            is_flagged=mail.state.flagged,
        )

    async def _load_folders(self, account_id: int) -> None:
        self._folders = {}
        for folder in await self.store.list_folders(account_id):
            if folder.role is not None:
                self._folders[f"role:{folder.role}"] = folder.id
            self._folders.setdefault(folder.name.casefold(), folder.id)

    async def _folder_id(self, account_id: int, source_name: str, report: ImportReport) -> int:
        role = role_for(source_name)
        if role is not None and f"role:{role}" in self._folders:
            return self._folders[f"role:{role}"]
        name = clean_folder_name(source_name)
        known = self._folders.get(name.casefold())
        if known is not None:
            return known
        try:
            folder = await self.mailbox.create_folder(account_id, name)
        except Conflict:  # made meanwhile (another run, the user)
            await self._load_folders(account_id)
            return self._folders[name.casefold()]
        self._folders[name.casefold()] = folder.id
        report.folders_created.append(folder.name)
        return folder.id


def parsed_time(mail: SourceMail) -> int:
    """When the mail was received, as well as the source says: the exact
    time an export of ours wrote, else the headers (last ``Received`` hop,
    else ``Date``), else the format's own time (``From_`` line, Maildir file
    mtime), else now."""
    return mail.exported_time_ms or header_time(mail.raw) or mail.format_time_ms or now_ms()


# -- export -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedFolder:
    name: str
    path: Path
    messages: int


class ExportService:
    """Writes an account's folders as mbox files."""

    def __init__(self, store: MailboxStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    async def folders(self, account_id: int) -> list[Folder]:
        return await self.store.list_folders(account_id)

    async def export_folder(
        self,
        folder: Folder,
        directory: Path,
        progress: Callable[[int], None] | None = None,
    ) -> ExportedFolder:
        """Writes ``folder`` to ``directory/<file_name_for(name)>.mbox``,
        oldest first, atomically (temporary file, fsync, rename, directory
        fsync)."""
        summaries = await self._summaries(folder)
        summaries.reverse()  # oldest first, as mbox files grow
        target = directory / f"{file_name_for(folder.name)}.mbox"
        temporary = directory / f".{target.name}.partial"
        with temporary.open("wb") as out:
            for start in range(0, len(summaries), EXPORT_PAGE):
                page = summaries[start : start + EXPORT_PAGE]
                entries = await asyncio.gather(*(self._entry(s) for s in page))
                out.write(b"".join(e for e in entries if e is not None))
                if progress is not None:
                    progress(len(page))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return ExportedFolder(folder.name, target, len(summaries))

    async def _summaries(self, folder: Folder) -> list[MessageSummary]:
        found: list[MessageSummary] = []
        after: ListCursor | None = None
        while True:
            page = await self.store.list_messages(
                folder.account_id, folder.id, is_read=None, limit=EXPORT_PAGE, after=after
            )
            found.extend(page)
            if len(page) < EXPORT_PAGE:
                return found
            after = ListCursor(page[-1].received_at, page[-1].id)

    async def _entry(self, summary: MessageSummary) -> bytes | None:
        message = await self.store.get_message(summary.account_id, summary.id)
        if message is None:  # deleted meanwhile
            return None
        raw = await self.blobs.get(message.raw_hash)
        # As GET /v1/messages/{id}/raw shows it: the filters' lines first.
        raw, _ = strip_state(message.filter_headers.encode() + raw)
        header, rest = split_header(to_lf(raw))
        if header and not header.endswith(b"\n"):
            header += b"\n"
        state = status_headers(summary.is_read, summary.is_flagged, summary.received_at)
        sender = summary.sender.email if summary.sender else None
        return (
            from_line(sender, summary.received_at)
            + b"\n"
            + mbox_quote(header + state + rest)
            + b"\n"
        )
