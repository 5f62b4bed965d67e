"""Errors every storage implementation raises, whatever its backend."""

from __future__ import annotations

import errno


class StorageError(Exception):
    pass


class DuplicateKey(StorageError):
    """A unique key (an address, a folder name) is already taken."""


class BlobTooLarge(StorageError):
    pass


class BlobMissing(StorageError):
    pass


class BlobCorrupt(StorageError):
    """A blob's bytes are not those its name (their sha256) promises: changed
    on the way to the store and refused, or found so on a read."""


class BackendUnavailable(StorageError):
    """The backend cannot be reached or refused the write: try later."""


class StorageFull(BackendUnavailable):
    """The backend's disk (or quota) is full: nothing was written. Also a
    "try later", since space comes back (an operator frees or adds some), but
    worth saying as such: SMTP answers 452 4.3.1, the API 507."""


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def write_failed(what: str, exc: OSError) -> BackendUnavailable:
    """The error a failed file write means: StorageFull when the file system
    or the quota is full, else BackendUnavailable."""
    kind = StorageFull if exc.errno in _NO_SPACE else BackendUnavailable
    return kind(f"{what}: {exc}")


UPGRADE_COMMAND = "mailfleet db upgrade"


class SchemaOutOfDate(StorageError):
    """The metadata database's schema is not the one this code is written for:
    older, and this process does not migrate (``storage.migrate_on_start`` is
    false), or newer than this code knows (code downgraded under a migrated
    database). A role refuses to start on it."""

    def __init__(
        self, database: str, revision: str | None, head: str, *, newer: bool = False
    ) -> None:
        self.database = database
        self.revision = revision
        self.head = head
        self.newer = newer
        if newer:
            message = (
                f"metadata database {database} is at schema revision {revision}, newer "
                f"than this mailfleet knows (its newest is {head}): it was migrated by a "
                "newer mailfleet; run that version"
            )
        else:
            found = f"at schema revision {revision}" if revision else "without a schema"
            message = (
                f"metadata database {database} is {found}; this mailfleet needs revision "
                f"{head} and does not migrate on start (storage.migrate_on_start is false): "
                f"run `{UPGRADE_COMMAND}` with the same settings, then start again"
            )
        super().__init__(message)


class MoveRefused(StorageError):
    """``mailfleet account move`` cannot start; the message says why."""
