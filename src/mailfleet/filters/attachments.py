"""The attachment policy: files that run when opened are not delivered,
whatever any scanner says of them. Needs nothing installed.

An attachment is blocked by its name (an extension of ``[filters]
blocked_extensions``: programs, scripts, installers, macro-enabled Office
files) or by its content, whatever its name says:

- a Windows program (``MZ``, the DOS header every PE file starts with) or an
  ELF program;
- an OOXML document carrying macros (a zip with a ``vbaProject.bin``; the
  ``.docm``/``.xlsm``/``.pptm`` family, renamed or not);
- an OLE2 (Office 97-2003) document carrying macros: its directory names a
  ``_VBA_PROJECT`` stream (names are stored UTF-16LE; a heuristic that needs
  no OLE parser, as ClamAV's own ``Heuristics.OLE2.ContainsMacros`` looks
  for the same storage);
- a Java archive (a zip with ``META-INF/MANIFEST.MF`` and classes);
- a zip holding any of these, looked into to a bounded depth and size
  (nested zips, zip bombs).

Nested ``message/rfc822`` parts are looked into as well. The one place that
decides on attachment types: the spam rules (``rules.py``) leave them here.
Inbound, a blocked attachment means QUARANTINE; in the send flow the mail is
refused (``delivery/send.py``).
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mailfleet.config import DEFAULT_BLOCKED_EXTENSIONS
from mailfleet.filters import FilterResult, MailToCheck, Reason, Verdict
from mailfleet.proto.mime import parse_message
from mailfleet.proto.mime.walk import ParsedAttachment

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
VBA_PROJECT_UTF16 = "_VBA_PROJECT".encode("utf-16-le")

# How far into archives and nested messages the policy looks: beyond these
# a zip is judged by what was seen (zip bombs cost nothing more).
MAX_DEPTH = 4
MAX_ZIP_ENTRIES = 2000
MAX_ZIP_READ = 64 * 1024 * 1024  # decompressed bytes read from one mail's zips


@dataclass(frozen=True, slots=True)
class Blocked:
    """One file the policy refuses: where it is (``a.zip/b.exe``) and why."""

    path: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def sniff(data: bytes) -> str | None:
    """What ``data`` is, when it is something that runs: a short
    description, else None. Zips are looked into by ``_zip``."""
    if data.startswith(b"MZ"):
        return "a Windows program (MZ header)"
    if data.startswith(b"\x7fELF"):
        return "an ELF program"
    if data.startswith(OLE2_MAGIC) and VBA_PROJECT_UTF16 in data:
        return "an Office document with macros (OLE2 VBA project)"
    return None


def _extension(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rpartition(".")[2].lower().strip() if "." in base else ""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_ZIP_READ


class AttachmentPolicy:
    """The filter. ``blocked_extensions`` lower-case, without the dot."""

    name = "attachments"

    def __init__(self, blocked_extensions: Iterable[str] = DEFAULT_BLOCKED_EXTENSIONS) -> None:
        self.blocked_extensions = frozenset(e.lower().lstrip(".") for e in blocked_extensions)

    async def check(self, mail: MailToCheck) -> FilterResult:
        if not mail.parsed.attachments:
            return FilterResult()
        # Zips are opened and nested messages parsed: off the event loop.
        found = await asyncio.to_thread(lambda: list(self.blocked(mail.parsed.attachments)))
        if not found:
            return FilterResult()
        detail = "; ".join(str(b) for b in found[:3])
        if len(found) > 3:
            detail += f"; and {len(found) - 3} more"
        return FilterResult(
            reasons=(Reason("ATTACHMENT_BLOCKED", 0.0, detail),), verdict=Verdict.QUARANTINE
        )

    def blocked(self, attachments: Iterable[ParsedAttachment]) -> Iterator[Blocked]:
        yield from self._attachments(attachments, "", 0, _Budget())

    def _attachments(
        self, attachments: Iterable[ParsedAttachment], where: str, depth: int, budget: _Budget
    ) -> Iterator[Blocked]:
        for attachment in attachments:
            path = where + attachment.filename
            if attachment.content_type == "message/rfc822" and depth < MAX_DEPTH:
                inner = parse_message(attachment.data)
                yield from self._attachments(inner.attachments, f"{path}/", depth + 1, budget)
                continue
            yield from self._file(path, attachment.data, depth, budget)

    def _file(self, path: str, data: bytes, depth: int, budget: _Budget) -> Iterator[Blocked]:
        extension = _extension(path)
        if extension in self.blocked_extensions:
            yield Blocked(path, f"files of type .{extension} are not allowed")
            return
        what = sniff(data)
        if what is not None:
            yield Blocked(path, what)
            return
        if data.startswith(ZIP_MAGIC):
            yield from self._zip(path, data, depth, budget)

    def _zip(self, path: str, data: bytes, depth: int, budget: _Budget) -> Iterator[Blocked]:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            entries = archive.infolist()[:MAX_ZIP_ENTRIES]
        except (zipfile.BadZipFile, ValueError, OSError):
            return  # not a zip after all; clamd judges what it is
        names = {e.filename for e in entries}
        if any(n.rsplit("/", 1)[-1].lower() == "vbaproject.bin" for n in names):
            yield Blocked(path, "an Office document with macros (vbaProject.bin)")
            return
        if "META-INF/MANIFEST.MF" in names and any(n.endswith(".class") for n in names):
            yield Blocked(path, "a Java archive")
            return
        for entry in entries:
            if entry.is_dir():
                continue
            inner = f"{path}/{entry.filename}"
            if _extension(entry.filename) in self.blocked_extensions:
                yield Blocked(inner, f"files of type .{_extension(entry.filename)} are not allowed")
                continue
            # Encrypted entries cannot be read: their names were checked.
            if entry.flag_bits & 0x1 or depth >= MAX_DEPTH or budget.left <= 0:
                continue
            try:
                with archive.open(entry) as member:
                    content = member.read(min(budget.left, entry.file_size))
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError):
                continue  # an unsupported compression, a damaged entry
            budget.left -= len(content)
            yield from self._file(inner, content, depth + 1, budget)
