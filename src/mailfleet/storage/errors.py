"""Errors every storage implementation raises, whatever its backend."""

from __future__ import annotations


class StorageError(Exception):
    pass


class DuplicateKey(StorageError):
    """A unique key (an address, a folder name) is already taken."""


class BlobTooLarge(StorageError):
    pass


class BlobMissing(StorageError):
    pass


class BackendUnavailable(StorageError):
    """The backend cannot be reached or refused the write: try later."""
