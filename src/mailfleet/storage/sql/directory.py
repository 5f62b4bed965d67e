"""``DirectoryStore`` over SQLAlchemy Core: domains, DKIM keys, accounts,
sessions. Portable SQL; the engines come from each backend (SQLite's shares the
mailbox database; PostgreSQL's is the directory database of a fleet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mailfleet.ids import now_ms
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import (
    Account,
    DkimKey,
    Domain,
    QuarantinedMail,
    Session,
)
from mailfleet.storage.sql.query import Query, ReadSession, ReadSessions
from mailfleet.storage.sql.rows import account_from_row, reasons_from_json, reasons_to_json
from mailfleet.storage.sql.schema import accounts, dkim_keys, domains, quarantine, sessions
from mailfleet.storage.sql.transaction import Transaction

P = sa.bindparam
_PING = Query(sa.select(sa.literal(1)))
_DOMAIN = Query(domains.select().where(domains.c.name == P("name")))
_DOMAINS = Query(domains.select().order_by(domains.c.name))
_DKIM_KEYS = Query(
    dkim_keys.select()
    .where(dkim_keys.c.domain == P("domain"))
    .order_by(dkim_keys.c.created_at.desc(), dkim_keys.c.selector)
)
_ACCOUNT = Query(accounts.select().where(accounts.c.id == P("id")))
_ACCOUNT_BY_EMAIL = Query(accounts.select().where(accounts.c.email == P("email")))
_ACCOUNTS = Query(accounts.select().order_by(accounts.c.email))
_ACCOUNTS_OF_DOMAIN = Query(
    accounts.select()
    .where(accounts.c.email.like(P("pattern"), escape="/"))
    .order_by(accounts.c.email)
)
_SESSION = Query(
    sessions.select().where(
        sessions.c.account_id == P("account_id"), sessions.c.token_hash == P("token_hash")
    )
)

_QUARANTINED = Query(quarantine.select().where(quarantine.c.id == P("id")))
_QUARANTINED_BY_KEY = Query(quarantine.select().where(quarantine.c.ingest_key == P("key")))
_QUARANTINE_PAGE = Query(
    quarantine.select()
    .where(quarantine.c.status == P("status"), quarantine.c.id < P("before"))
    .order_by(quarantine.c.id.desc())
    .limit(P("limit"))
)
_QUARANTINE_PAGE_ALL = Query(
    quarantine.select()
    .where(quarantine.c.id < P("before"))
    .order_by(quarantine.c.id.desc())
    .limit(P("limit"))
)
# Entries that still name their raw blob.
HOLDING = ("held", "releasing")
_NO_LIMIT = 2**63 - 1


def _quarantined(row: Any) -> QuarantinedMail:
    return QuarantinedMail(
        id=row["id"],
        ingest_key=row["ingest_key"],
        received_at=row["received_at"],
        quarantined_at=row["quarantined_at"],
        mail_from=row["mail_from"],
        recipients=tuple(orjson.loads(row["recipients"])),
        client_ip=row["client_ip"],
        helo=row["helo"],
        sender=row["sender"],
        subject=row["subject"],
        raw_hash=row["raw_hash"],
        raw_size=row["raw_size"],
        verdict=row["verdict"],
        score=row["score"],
        reasons=reasons_from_json(row["reasons"]),
        filter_headers=row["filter_headers"],
        status=row["status"],
        resolved_at=row["resolved_at"],
    )


def _ends_with(suffix: str) -> str:
    escaped = suffix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return "%" + escaped


class SqlDirectoryStore:
    """Reads through ``reads`` (the driver's own speed, ``storage/sql/query.py``),
    writes through ``writer`` (SQLite wants one writer connection taking its
    lock up front). ``open`` and ``close`` belong to whoever owns them."""

    def __init__(self, writer: AsyncEngine, reads: ReadSessions) -> None:
        self.writer = writer
        self.reads = reads

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        async with self._read() as session:
            await session.first(_PING)

    def _write(self) -> Transaction:
        return Transaction(self.writer, write=True)

    def _read(self) -> AbstractAsyncContextManager[ReadSession]:
        return self.reads.read()

    async def add_domain(self, domain: Domain) -> None:
        async with self._write() as conn:
            await conn.execute(
                domains.insert().values(
                    name=domain.name, open_signup=domain.open_signup, created_at=domain.created_at
                )
            )

    async def get_domain(self, name: str) -> Domain | None:
        async with self._read() as session:
            row = await session.first(_DOMAIN, name=name)
        return Domain(row["name"], bool(row["open_signup"]), row["created_at"]) if row else None

    async def list_domains(self) -> list[Domain]:
        async with self._read() as session:
            rows = await session.all(_DOMAINS)
        return [Domain(r["name"], bool(r["open_signup"]), r["created_at"]) for r in rows]

    async def set_domain_signup(self, name: str, open_signup: bool) -> None:
        async with self._write() as conn:
            await conn.execute(
                domains.update().where(domains.c.name == name).values(open_signup=open_signup)
            )

    async def add_dkim_key(self, key: DkimKey) -> None:
        async with self._write() as conn:
            await conn.execute(
                dkim_keys.insert().values(
                    domain=key.domain,
                    selector=key.selector,
                    private_key_pem=key.private_key_pem,
                    created_at=key.created_at,
                )
            )

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        async with self._read() as session:
            rows = await session.all(_DKIM_KEYS, domain=domain)
        return [
            DkimKey(r["domain"], r["selector"], r["private_key_pem"], r["created_at"]) for r in rows
        ]

    async def create_account(self, account: Account) -> None:
        async with self._write() as conn:
            await conn.execute(
                accounts.insert().values(
                    id=account.id,
                    email=account.email,
                    name=account.name,
                    password_hash=account.password_hash,
                    disabled=account.disabled,
                    created_at=account.created_at,
                )
            )

    async def get_account(self, account_id: int) -> Account | None:
        async with self._read() as session:
            row = await session.first(_ACCOUNT, id=account_id)
        return account_from_row(row) if row else None

    async def get_account_by_email(self, email: str) -> Account | None:
        async with self._read() as session:
            row = await session.first(_ACCOUNT_BY_EMAIL, email=email)
        return account_from_row(row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        async with self._read() as session:
            if domain is None:
                rows = await session.all(_ACCOUNTS)
            else:
                rows = await session.all(_ACCOUNTS_OF_DOMAIN, pattern=_ends_with("@" + domain))
        return [account_from_row(r) for r in rows]

    async def update_account(
        self, account_id: int, *, password_hash: str | None = None, disabled: bool | None = None
    ) -> None:
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if disabled is not None:
            values["disabled"] = disabled
        if values:
            async with self._write() as conn:
                await conn.execute(
                    accounts.update().where(accounts.c.id == account_id).values(**values)
                )

    async def set_hold(self, account_id: int, reason: str | None) -> bool:
        query = accounts.update().where(accounts.c.id == account_id)
        if reason is None:
            query = query.where(accounts.c.held_reason.is_not(None)).values(
                held_reason=None, held_at=None, released_at=now_ms()
            )
        else:
            query = query.where(accounts.c.held_reason.is_(None)).values(
                held_reason=reason, held_at=now_ms()
            )
        async with self._write() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def create_session(self, session: Session) -> None:
        async with self._write() as conn:
            await conn.execute(
                sessions.insert().values(
                    account_id=session.account_id,
                    token_hash=session.token_hash,
                    expires_at=session.expires_at,
                )
            )

    async def get_session(self, account_id: int, token_hash: bytes) -> Session | None:
        async with self._read() as session:
            row = await session.first(_SESSION, account_id=account_id, token_hash=token_hash)
        return Session(row["account_id"], row["token_hash"], row["expires_at"]) if row else None

    async def delete_session(self, account_id: int, token_hash: bytes) -> None:
        async with self._write() as conn:
            await conn.execute(
                sessions.delete().where(
                    sessions.c.account_id == account_id, sessions.c.token_hash == token_hash
                )
            )

    async def delete_sessions(self, account_id: int) -> None:
        async with self._write() as conn:
            await conn.execute(sessions.delete().where(sessions.c.account_id == account_id))

    # -- quarantine ------------------------------------------------------------------

    async def quarantine(self, mail: QuarantinedMail) -> QuarantinedMail:
        try:
            async with self._write() as conn:
                await conn.execute(
                    quarantine.insert().values(
                        id=mail.id,
                        ingest_key=mail.ingest_key,
                        status=mail.status,
                        received_at=mail.received_at,
                        quarantined_at=mail.quarantined_at,
                        resolved_at=mail.resolved_at,
                        mail_from=mail.mail_from,
                        recipients=json.dumps(list(mail.recipients), ensure_ascii=False),
                        client_ip=mail.client_ip,
                        helo=mail.helo,
                        sender=mail.sender,
                        subject=mail.subject,
                        raw_hash=mail.raw_hash,
                        raw_size=mail.raw_size,
                        verdict=mail.verdict,
                        score=mail.score,
                        reasons=reasons_to_json(mail.reasons),
                        filter_headers=mail.filter_headers,
                    )
                )
        except DuplicateKey:
            # Seen before (a redelivered queue item): the first entry stands.
            async with self._read() as session:
                row = await session.first(_QUARANTINED_BY_KEY, key=mail.ingest_key)
            if row is None:  # the id was taken, not the key: not a repeat
                raise
            return _quarantined(row)
        return mail

    async def get_quarantined(self, quarantine_id: int) -> QuarantinedMail | None:
        async with self._read() as session:
            row = await session.first(_QUARANTINED, id=quarantine_id)
        return _quarantined(row) if row else None

    async def list_quarantined(
        self, *, status: str | None = "held", before: int | None = None, limit: int = 100
    ) -> list[QuarantinedMail]:
        before = _NO_LIMIT if before is None else before
        async with self._read() as session:
            if status is None:
                rows = await session.all(_QUARANTINE_PAGE_ALL, before=before, limit=limit)
            else:
                rows = await session.all(
                    _QUARANTINE_PAGE, status=status, before=before, limit=limit
                )
        return [_quarantined(r) for r in rows]

    async def set_quarantine_status(
        self, quarantine_id: int, *, expected: Sequence[str], status: str, at: int
    ) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                quarantine.update()
                .where(quarantine.c.id == quarantine_id, quarantine.c.status.in_(list(expected)))
                .values(status=status, resolved_at=at)
            )
        return bool(result.rowcount)

    async def quarantine_blob_references(self, hashes: Sequence[str]) -> set[str]:
        if not hashes:
            return set()
        # Rare (the blob sweep), and an IN list: through SQLAlchemy.
        async with self._write() as conn:
            result = await conn.execute(
                sa.select(quarantine.c.raw_hash)
                .where(quarantine.c.raw_hash.in_(list(hashes)), quarantine.c.status.in_(HOLDING))
                .distinct()
            )
            return {row[0] for row in result}
