"""Quarantined inbound mail, for administrators (decision 0021): worker-in
holds a mail a filter quarantined (``IncomingService._hold``); here it is
listed, shown, released to its recipients' Inboxes, or deleted.

Release moves the entry ``held`` → ``releasing`` first, stores the copies
(worker-in's ingest keys: a repeat stores nothing twice), then
``releasing`` → ``released``. A release cut short leaves ``releasing`` and
is simply run again; a delete only takes a ``held`` entry, so it can never
undo a release half done.
"""

from __future__ import annotations

import logging

from mailfleet.delivery.incoming import IncomingService
from mailfleet.errors import Conflict, NotFound
from mailfleet.ids import now_ms
from mailfleet.storage.interfaces import DirectoryStore, QuarantinedMail

log = logging.getLogger("mailfleet.quarantine")


class QuarantineService:
    def __init__(self, directory: DirectoryStore, incoming: IncomingService) -> None:
        self.directory = directory
        self.incoming = incoming

    async def entries(
        self, *, status: str | None = "held", before: int | None = None, limit: int = 100
    ) -> list[QuarantinedMail]:
        return await self.directory.list_quarantined(status=status, before=before, limit=limit)

    async def get(self, quarantine_id: int) -> QuarantinedMail:
        entry = await self.directory.get_quarantined(quarantine_id)
        if entry is None:
            raise NotFound(f"no quarantined mail {quarantine_id}")
        return entry

    async def raw(self, entry: QuarantinedMail) -> bytes:
        """The mail as received; its blob is gone once the entry was deleted
        (or released and its copies deleted) and swept."""
        if entry.status not in ("held", "releasing"):
            raise Conflict(f"quarantined mail {entry.id} was {entry.status}: not kept any more")
        return await self.incoming.blobs.get(entry.raw_hash)

    async def release(self, quarantine_id: int) -> list[str]:
        """Delivers the mail to its recipients' Inboxes, once; answers them."""
        entry = await self.get(quarantine_id)
        if not await self.directory.set_quarantine_status(
            entry.id, expected=("held", "releasing"), status="releasing", at=now_ms()
        ):
            raise Conflict(f"quarantined mail {entry.id} was already {await self._status(entry)}")
        delivered = await self.incoming.release(entry)
        await self.directory.set_quarantine_status(
            entry.id, expected=("releasing",), status="released", at=now_ms()
        )
        log.warning("quarantined mail %d released to %s", entry.id, ", ".join(delivered))
        return delivered

    async def delete(self, quarantine_id: int) -> None:
        """Drops the mail: the entry stays as a record (``deleted``), its raw
        blob is no longer named by it and the blob sweep frees it."""
        entry = await self.get(quarantine_id)
        if not await self.directory.set_quarantine_status(
            entry.id, expected=("held",), status="deleted", at=now_ms()
        ):
            raise Conflict(f"quarantined mail {entry.id} was already {await self._status(entry)}")
        log.warning("quarantined mail %d deleted", entry.id)

    async def _status(self, entry: QuarantinedMail) -> str:
        current = await self.directory.get_quarantined(entry.id)
        return current.status if current else "gone"
