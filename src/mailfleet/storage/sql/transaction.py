"""One SQL transaction as an async context manager, mapping driver errors to
the storage errors every implementation raises."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailfleet.storage.errors import BackendUnavailable, DuplicateKey, StorageFull

# PostgreSQL's disk_full (class 53, insufficient resources).
_DISK_FULL = "53100"


def storage_error(exc: BaseException) -> BaseException:
    """The storage error a driver error means, or the error itself."""
    if isinstance(exc, sa_exc.IntegrityError):
        return DuplicateKey(str(exc.orig))
    if isinstance(exc, sa_exc.DBAPIError) and getattr(exc.orig, "sqlstate", None) == _DISK_FULL:
        return StorageFull(str(exc.orig))
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return BackendUnavailable(str(exc.orig))
    return exc


class Transaction:
    """One transaction; maps driver errors to the storage errors."""

    def __init__(self, engine: AsyncEngine, *, write: bool) -> None:
        self.engine = engine
        self.write = write
        self._cm: Any = None

    async def __aenter__(self) -> AsyncConnection:
        self._cm = self.engine.begin() if self.write else self.engine.connect()
        try:
            conn: AsyncConnection = await self._cm.__aenter__()
        except sa_exc.OperationalError as exc:
            raise BackendUnavailable(str(exc.orig)) from exc
        return conn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._cm.__aexit__(exc_type, exc, tb)
        except sa_exc.SQLAlchemyError as err:
            raise storage_error(err) from err
        if exc is not None and storage_error(exc) is not exc:
            raise storage_error(exc) from exc
