"""Where imported mail comes from: a path on disk read as what it is.

- a file: one mbox, its folder named by the file (``Sent.mbox`` is Sent,
  ``Work%2FClients.mbox`` is Work/Clients, as ``mailfleet export`` writes);
- a directory with ``cur/`` or ``new/``: a Maildir, its root the Inbox and
  its ``.Folder.Sub`` directories Maildir++ folders (Dovecot, Courier,
  Python's ``mailbox.Maildir``);
- any other directory: every Maildir and mbox file under it, named by their
  path (Thunderbird's ``Work.sbd/Clients`` is Work/Clients; ``.msf`` indexes
  and other files that do not start with ``From `` are left alone).

Every mail comes out as ``SourceMail``: CRLF line ends, the mailbox-state
headers taken off (their flags kept), its folder (a Takeout mail's
``X-Gmail-Labels`` decide it), and the time the format gives besides the
headers (``From_`` line, file mtime)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailfleet.proto.mailfiles import (
    MailState,
    count_mbox,
    folder_for_file,
    from_line_time,
    gmail_folder,
    maildir_state,
    maildirpp_folder,
    mbox_state,
    read_mbox,
    received_at_state,
    strip_state,
    to_crlf,
)

INBOX = "Inbox"
_MAILDIR_PARTS = ("cur", "new", "tmp")
_READ_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class SourceMail:
    """One mail to import."""

    folder: str  # as the source names it: "Inbox", "Sent Items", "Work/Clients"
    raw: bytes  # CRLF line ends, ending in CRLF, state headers removed
    state: MailState
    format_time_ms: int | None  # the From_ line's date or the file's mtime
    exported_time_ms: int | None  # the exact time an export of ours wrote
    where: str  # the file (and message number in an mbox), for messages


@dataclass(frozen=True, slots=True)
class Folder:
    """One mbox file or Maildir folder found under the path."""

    name: str
    path: Path
    kind: str  # "mbox" or "maildir"

    def count(self) -> int:
        """How many mails it holds (roughly, for an mbox), for progress."""
        if self.kind == "maildir":
            return sum(len(_files(self.path / part)) for part in ("cur", "new"))
        with self.path.open("rb") as f:
            return count_mbox(iter(lambda: f.read(_READ_BLOCK), b""))

    def mails(self) -> Iterator[SourceMail]:
        if self.kind == "maildir":
            yield from self._maildir()
        else:
            yield from self._mbox()

    def _mbox(self) -> Iterator[SourceMail]:
        with self.path.open("rb") as f:
            for number, entry in enumerate(read_mbox(f), 1):
                raw, state = strip_state(to_crlf(entry.message))
                labels = state.get("x-gmail-labels")
                yield SourceMail(
                    folder=gmail_folder(labels) if labels is not None else self.name,
                    raw=_ended(raw),
                    state=mbox_state(state),
                    format_time_ms=from_line_time(entry.from_line),
                    exported_time_ms=received_at_state(state),
                    where=f"{self.path} message {number}",
                )

    def _maildir(self) -> Iterator[SourceMail]:
        for part in ("new", "cur"):
            for name in _files(self.path / part):
                path = self.path / part / name
                try:
                    data = path.read_bytes()
                    mtime = int(path.stat().st_mtime * 1000)
                except FileNotFoundError:  # moved by a client meanwhile
                    continue
                raw, state = strip_state(to_crlf(data))
                yield SourceMail(
                    folder=self.name,
                    raw=_ended(raw),
                    state=maildir_state(name),
                    format_time_ms=mtime,
                    exported_time_ms=received_at_state(state),
                    where=str(path),
                )


def _ended(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def _files(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_file())
    except FileNotFoundError:
        return []


def _is_maildir(directory: Path) -> bool:
    return (directory / "cur").is_dir() or (directory / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    # Hidden files: an export's unfinished .Name.mbox.partial, editors' files.
    if path.name.startswith(".") or path.suffix in (".msf", ".dat", ".json", ".sqlite"):
        return False
    try:
        with path.open("rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def _part_name(part: str) -> str:
    if part.startswith("."):
        return maildirpp_folder(part)
    for suffix in (".sbd", ".mbox", ".mbx"):
        part = part.removesuffix(suffix)
    return folder_for_file(part)


def _root_name(root: Path) -> str:
    """A Maildir given as the path: the Inbox of a Maildir++ tree (it has
    ``.Folder`` sub-folders, or is named Maildir or INBOX), else the one
    folder its directory names (mutt keeps a Maildir per folder)."""
    if root.name.casefold() in ("maildir", "inbox", ".maildir") or any(
        d.name.startswith(".") and _is_maildir(d) for d in root.iterdir() if d.is_dir()
    ):
        return INBOX
    return _part_name(root.name)


def find_folders(path: Path) -> list[Folder]:
    """Every mbox file and Maildir folder the path holds, in a stable order."""
    if path.is_file():
        return [Folder(_part_name(path.name), path, "mbox")]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    found: list[Folder] = []
    for directory, subdirs, files in os.walk(path):
        here = Path(directory)
        relative = here.relative_to(path).parts
        subdirs.sort()
        if _is_maildir(here):
            name = "/".join(_part_name(p) for p in relative) if relative else _root_name(here)
            found.append(Folder(name, here, "maildir"))
            subdirs[:] = [d for d in subdirs if d not in _MAILDIR_PARTS]
        for file in sorted(files):
            if _is_mbox(here / file):
                name = "/".join(_part_name(p) for p in (*relative, file))
                found.append(Folder(name, here / file, "mbox"))
    return found
