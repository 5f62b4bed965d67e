"""Sign-up, login, token checks and the admin operations on accounts.

A token is ``<account id>.<secret>``: the account id routes the lookup to the
mailbox's shard; only sha256(secret) is stored, so a leaked database yields no
usable token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailfleet.accounts.throttle import LoginThrottle
from mailfleet.accounts.tokens import VerifiedTokens
from mailfleet.config import AuthSettings
from mailfleet.errors import Conflict, Invalid, NotFound, Unauthorized
from mailfleet.ids import new_id, now_ms, parse_id
from mailfleet.proto.addresses import (
    AddressError,
    mailbox_key,
    normalize_domain,
    normalize_email,
    normalize_name,
)
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import (
    FOLDER_ROLES,
    Account,
    Cache,
    DirectoryStore,
    Domain,
    EventBus,
    Folder,
    MailboxStore,
    Session,
)

# Verified against when the address is unknown, so that a wrong address costs
# as long as a wrong password and does not reveal which addresses exist.
_DUMMY_PASSWORD = "not a password of anyone"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A token's account and when its session ends (ms since the epoch): what
    a socket or a long poll needs to end with the session."""

    account: Account
    expires_at: int


def session_expired() -> Unauthorized:
    return Unauthorized("the session has expired: log in again", code="session_expired")


class AccountService:
    def __init__(
        self,
        directory: DirectoryStore,
        mailboxes: MailboxStore,
        settings: AuthSettings,
        events: EventBus,
        cache: Cache,
    ) -> None:
        self.directory = directory
        self.mailboxes = mailboxes
        self.settings = settings
        self.events = events
        self.tokens = VerifiedTokens(events)
        self.throttle = LoginThrottle(cache, settings)
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._dummy_hash: str | None = None

    # -- domains ------------------------------------------------------------------

    async def add_domain(self, name: str, *, open_signup: bool = False) -> Domain:
        try:
            domain = Domain(normalize_domain(name), open_signup, now_ms())
        except AddressError as exc:
            raise Invalid(str(exc), code="invalid_domain") from None
        try:
            await self.directory.add_domain(domain)
        except DuplicateKey:
            raise Conflict(f"domain {domain.name} exists already", code="domain_exists") from None
        return domain

    async def ensure_domain(self, name: str, *, open_signup: bool) -> None:
        domain = normalize_domain(name)
        existing = await self.directory.get_domain(domain)
        if existing is None:
            # The processes of a fleet start together, each ensuring the
            # configured domains: another one may make it first.
            with contextlib.suppress(Conflict):
                await self.add_domain(domain, open_signup=open_signup)
        elif existing.open_signup != open_signup:
            await self.directory.set_domain_signup(domain, open_signup)

    async def is_hosted(self, domain: str) -> bool:
        try:
            return await self.directory.get_domain(normalize_domain(domain)) is not None
        except AddressError:
            return False

    # -- accounts -----------------------------------------------------------------

    async def sign_up(self, email: str, password: str, name: str) -> Account:
        """Self-service sign-up: only on domains opened for it."""
        address = self._valid_address(email)
        domain = await self.directory.get_domain(address.rpartition("@")[2])
        if domain is None:
            raise Invalid(
                f"{address.rpartition('@')[2]} is not a domain this server hosts",
                code="unknown_domain",
            )
        if not domain.open_signup:
            raise Invalid(f"sign-up is closed on {domain.name}", code="signup_closed")
        return await self._create(address, password, name)

    async def add_user(self, email: str, password: str, name: str = "") -> Account:
        """Admin creation: any hosted domain, open or not."""
        address = self._valid_address(email)
        if await self.directory.get_domain(address.rpartition("@")[2]) is None:
            raise Invalid(
                f"{address.rpartition('@')[2]} is not a hosted domain; add it first",
                code="unknown_domain",
            )
        return await self._create(address, password, name)

    def _valid_address(self, email: str) -> str:
        try:
            address = mailbox_key(normalize_email(email))
        except AddressError as exc:
            raise Invalid(str(exc), code="invalid_address") from None
        if not address.isascii():
            raise Invalid("addresses of accounts must be ASCII", code="invalid_address")
        return address

    def _check_password(self, password: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise Invalid(
                f"password must have at least {self.settings.min_password_length} characters",
                code="weak_password",
            )
        if len(password) > 1024:
            raise Invalid("password is too long", code="invalid_password")
        if any("\ud800" <= c <= "\udfff" for c in password):
            # Lone surrogates: JSON can carry them, UTF-8 cannot.
            raise Invalid("password is not valid Unicode text", code="invalid_password")

    async def _create(self, address: str, password: str, name: str) -> Account:
        self._check_password(password)
        try:
            name = normalize_name(name)
        except AddressError as exc:
            raise Invalid(f"name: {exc}", code="invalid_name") from None
        account = Account(
            id=new_id(),
            email=address,
            name=name,
            password_hash=await asyncio.to_thread(self.hasher.hash, password),
            disabled=False,
            created_at=now_ms(),
        )
        folders = [
            Folder(account.id, new_id(), role.capitalize(), role, 0, 0) for role in FOLDER_ROLES
        ]
        if await self.directory.get_account_by_email(address) is not None:
            raise Conflict(f"{address} is taken", code="address_taken")
        # The mailbox first (on its shard), then the directory entry that makes
        # the account exist: a crash between the two leaves an unused mailbox,
        # never an account without one.
        await self.mailboxes.create_mailbox(account.id, folders)
        try:
            await self.directory.create_account(account)
        except DuplicateKey:
            raise Conflict(f"{address} is taken", code="address_taken") from None
        return account

    async def find(self, email: str) -> Account:
        try:
            address = mailbox_key(normalize_email(email))
        except AddressError:
            raise NotFound(f"no account {email!r}", code="unknown_account") from None
        account = await self.directory.get_account_by_email(address)
        if account is None:
            raise NotFound(f"no account {email}", code="unknown_account")
        return account

    async def set_password(self, email: str, password: str) -> None:
        account = await self.find(email)
        self._check_password(password)
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        await self.directory.update_account(account.id, password_hash=password_hash)
        await self._end_sessions(account.id)

    async def set_disabled(self, email: str, disabled: bool) -> None:
        account = await self.find(email)
        await self.directory.update_account(account.id, disabled=disabled)
        if disabled:
            await self._end_sessions(account.id)

    async def _end_sessions(self, account_id: int) -> None:
        await self.directory.delete_sessions(account_id)
        await self.events.publish_revoked([account_id])

    # -- sessions -----------------------------------------------------------------

    async def verify_password(
        self, email: str, password: str | bytes, *, client_ip: str
    ) -> Account:
        """The account, or Unauthorized with one message for every failure;
        TooManyAttempts, whatever the password, while the address or the
        client is locked out (accounts/throttle.py). Every door that takes a
        password comes through here."""
        try:
            address = mailbox_key(normalize_email(email))
        except AddressError:
            address = ""
        await self.throttle.check(address, client_ip)
        try:
            account = await self._verified(address, password)
        except Unauthorized:
            await self.throttle.failed(address, client_ip)
            raise
        # Failures that ran beside this attempt may have spent the budget
        # meanwhile: a lock holds for every attempt it finds unanswered.
        await self.throttle.check(address, client_ip)
        await self.throttle.succeeded(address)
        return account

    async def _verified(self, address: str, password: str | bytes) -> Account:
        failure = Unauthorized("wrong address or password", code="invalid_credentials")
        account = await self.directory.get_account_by_email(address) if address else None
        if account is None and self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self.hasher.hash, _DUMMY_PASSWORD)
        stored = account.password_hash if account else self._dummy_hash
        assert stored is not None
        if isinstance(password, str):
            # Lone surrogates become bytes no UTF-8 password hashed to.
            password = password.encode("utf-8", "surrogatepass")
        try:
            await asyncio.to_thread(self.hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            raise failure from None
        if account is None or account.disabled:
            raise failure
        if self.hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            await self.directory.update_account(account.id, password_hash=new_hash)
        return account

    async def log_in(self, email: str, password: str, *, client_ip: str) -> IssuedToken:
        account = await self.verify_password(email, password, client_ip=client_ip)
        secret = secrets.token_bytes(32)
        expires_at = now_ms() + round(self.settings.session_ttl_seconds * 1000)
        await self.directory.create_session(
            Session(account.id, hashlib.sha256(secret).digest(), expires_at)
        )
        token = f"{account.id}.{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"
        return IssuedToken(token, expires_at)

    @staticmethod
    def _split_token(token: str) -> tuple[int, bytes] | None:
        account_part, dot, secret_part = token.partition(".")
        account_id = parse_id(account_part)
        if not dot or account_id is None or len(secret_part) != 43:
            return None
        try:
            secret = base64.urlsafe_b64decode(secret_part + "=")
        except ValueError:
            return None
        return account_id, hashlib.sha256(secret).digest()

    async def authenticate(self, token: str) -> Account:
        """The account a bearer token belongs to, or Unauthorized."""
        return (await self.session(token)).account

    async def session(self, token: str) -> LiveSession:
        """The token's account and its session's end, or Unauthorized: code
        ``session_expired`` for a session that ran out (log in again),
        ``invalid_token`` for anything else (never issued, logged out, a new
        password, a disabled account)."""
        failure = Unauthorized("missing, expired or invalid token", code="invalid_token")
        parts = self._split_token(token)
        if parts is None:
            raise failure
        account_id, token_hash = parts
        cached = self.tokens.get(account_id, token_hash)
        if cached is not None:
            return LiveSession(*cached)
        epoch = self.tokens.epoch(account_id)
        session = await self.directory.get_session(account_id, token_hash)
        if session is None:
            raise failure
        account = await self.directory.get_account(account_id)
        if account is None or account.disabled:
            raise failure
        if session.expires_at <= now_ms():
            raise session_expired()
        self.tokens.put(account, token_hash, session.expires_at, epoch)
        return LiveSession(account, session.expires_at)

    async def log_out(self, token: str) -> None:
        parts = self._split_token(token)
        if parts is None:
            return
        account_id, token_hash = parts
        await self.directory.delete_session(account_id, token_hash)
        await self.events.publish_revoked([account_id])
