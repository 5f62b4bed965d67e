"""Message submission (``submission``, RFC 6409): SMTP for the users' own mail
clients, on port 587 by convention (``smtp.submission_listen``). What comes in
takes the same path as ``POST /v1/messages`` (``SendService.send_raw``).

Policy answers (RFC 5321 section 4.2, RFC 3463 enhanced codes):

- AUTH PLAIN (RFC 4616) and LOGIN against the accounts' passwords (RFC 4954),
  only over TLS (STARTTLS, RFC 3207): 538 5.7.11 before it, except from
  loopback when ``smtp.insecure_auth_on_loopback`` is set (tests);
  wrong credentials or a disabled account: 535 5.7.8; an address or client
  locked after too many failures (the accounts' one rule, shared with
  ``POST /v1/sessions``: accounts/throttle.py): 454 4.7.0 with the time left,
  whatever the password;
- MAIL, RCPT or DATA before AUTH: 530 5.7.0;
- MAIL FROM other than the user's address, or a From/Sender field naming
  someone else: 550 5.7.1; so is MAIL once the account has been disabled;
  MAIL FROM that is no address: 553 5.1.7;
- RCPT to an unknown mailbox on a domain we host: 550 5.1.1; any other
  domain is relayed (the client is authenticated); too many: 452 4.5.3;
  no address (hidden characters in it among others: decision 0024):
  553 5.1.3;
- over the size limit: 552 5.3.4; too many messages: 451 4.7.1;
- a virus or a blocked attachment: 554 5.7.1 with what was found; the virus
  scanner unable to answer: 451 4.7.1;
- any storage failure: 451 4.3.0, never 250 (a full disk: 452 4.3.1).
"""

from __future__ import annotations

import ipaddress
import logging
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult

from mailfleet.accounts.service import AccountService
from mailfleet.config import Settings
from mailfleet.delivery.send import SendService
from mailfleet.errors import MailfleetError, NotFound, RateLimited, TooManyAttempts, Unauthorized
from mailfleet.ratelimit import RateLimiter
from mailfleet.smtp.server import STORAGE_FULL_REPLY, MailfleetSMTP
from mailfleet.storage.errors import StorageError, StorageFull
from mailfleet.storage.interfaces import Account

log = logging.getLogger("mailfleet.submission")


class _WithoutLoginDataWarning(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning on every successful AUTH
    (it sets the legacy ``session.login_data`` itself); not ours to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_WithoutLoginDataWarning())

# A service error's code -> the reply it becomes; the one place that decides.
_REPLIES = {
    "sender_not_allowed": "550 5.7.1",
    "invalid_sender": "553 5.1.7",
    "unknown_recipient": "550 5.1.1",
    "invalid_address": "553 5.1.3",
    "too_many_recipients": "452 4.5.3",
    "no_recipients": "503 5.5.1",
    "message_too_large": "552 5.3.4",
    "malformed_header": "554 5.6.0",
    "virus_found": "554 5.7.1",
    "attachment_blocked": "554 5.7.1",
    "content_refused": "554 5.7.1",
    "unavailable": "451 4.3.0",
    "scanner_unavailable": "451 4.7.1",
    "spam_refused": "554 5.7.1",
    "account_held": "550 5.7.1",
}


def reply_for(error: MailfleetError) -> str:
    if isinstance(error, RateLimited):
        return f"451 4.7.1 {_one_line(error.message)}"
    code = _REPLIES.get(error.code)
    if code is None:
        log.warning("no SMTP reply for service error %s: %s", error.code, error.message)
        return "451 4.3.0 Temporary failure; try again later"
    return f"{code} {_one_line(error.message)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


def _client_ip(session: Any) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and 127/8 written as an IPv4-mapped IPv6 address."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class SubmissionSMTP(MailfleetSMTP):
    """Our protocol with AUTH required before mail, and required over TLS
    unless the settings let loopback clients go without."""

    def __init__(self, *args: Any, insecure_auth_on_loopback: bool, **kwargs: Any) -> None:
        # auth_require_tls stays True here: aiosmtpd warns when it is built
        # without, and it is only relaxed per connection, once the peer is known.
        super().__init__(*args, auth_required=True, auth_require_tls=True, **kwargs)
        self.insecure_auth_on_loopback = insecure_auth_on_loopback

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # also after STARTTLS, with a new session
        ip = _client_ip(self.session)
        self._auth_require_tls = not (self.insecure_auth_on_loopback and is_loopback(ip))


class SubmissionHandler:
    """aiosmtpd handler hooks and AUTH mechanisms; everything else is
    aiosmtpd's default. The authenticated Account is ``session.auth_data``.
    aiosmtpd takes every member named ``auth_*`` for a mechanism: no other
    attribute may be named so."""

    def __init__(
        self,
        sending: SendService,
        accounts: AccountService,
        limiter: RateLimiter,
        settings: Settings,
    ) -> None:
        self.sending = sending
        self.accounts = accounts
        self.limiter = limiter
        self.max_recipients = settings.limits.max_recipients
        self.messages_per_minute = settings.smtp.messages_per_minute_per_ip

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # Insert before the final "250 HELP" line, which must stay last.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    # -- AUTH (RFC 4954) -------------------------------------------------------------

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        """RFC 4616: base64 of ``authzid NUL authcid NUL password``, as an
        initial response or after an empty challenge."""
        if len(args) == 1:
            response = await server.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)  # aborted; already answered
        else:
            response = _base64(args[1])
            if response is None:
                return _refused("501 5.5.2 Cannot decode base64")
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return _refused("501 5.5.2 Cannot split the PLAIN response")
        authzid, login, password = parts
        if authzid and authzid != login:
            # Acting for another user (proxy authorization) is not offered.
            return _refused("535 5.7.8 Authorization identity refused")
        return await self._log_in(server, login, password)

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        """The de facto LOGIN mechanism: user name, then password, each
        base64 after a challenge (the user name may come with AUTH)."""
        if len(args) == 1:
            login = await server.challenge_auth(server.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            login = _base64(args[1])
            if login is None:
                return _refused("501 5.5.2 Cannot decode base64")
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._log_in(server, login, password)

    async def _log_in(self, server: Any, login: bytes, password: bytes) -> AuthResult:
        ip = _client_ip(server.session)
        try:
            # The password as sent: bytes that are not UTF-8 match no
            # password (each was hashed from its UTF-8), and fail like any.
            account = await self.accounts.verify_password(
                login.decode("utf-8", "replace"), password, client_ip=ip
            )
        except TooManyAttempts as exc:
            return _refused(f"454 4.7.0 {_one_line(exc.message)}")
        except Unauthorized:
            log.info("failed submission login from %s", ip)
            return _refused("535 5.7.8 Authentication credentials invalid")
        except StorageError:
            log.exception("cannot check submission login from %s", ip)
            return _refused("454 4.7.0 Temporary failure; try later")
        return AuthResult(success=True, auth_data=account)

    # -- the transaction -------------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        account: Account = session.auth_data
        try:
            await self.limiter.hit(
                f"smtp:msg:{_client_ip(session)}", self.messages_per_minute, 60, "messages"
            )
            # Read again, not trusted from AUTH: the account may have been
            # disabled since, and a session can last long.
            try:
                current: Account | None = await self.accounts.find(account.email)
            except NotFound:
                current = None
            if current is None or current.disabled:
                return "550 5.7.1 This account is disabled"
            session.auth_data = current
            self.sending.check_sender(current, address)
            await self.sending.abuse.check_may_send(current.id)
        except MailfleetError as exc:
            return reply_for(exc)
        except StorageError:
            log.exception("MAIL check failed")
            return "451 4.3.0 Temporary failure; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            recipient = await self.sending.check_recipient(address)
        except MailfleetError as exc:
            return reply_for(exc)
        except StorageError:
            log.exception("recipient check failed")
            return "451 4.3.0 Temporary failure; try again later"
        envelope.rcpt_tos.append(recipient.email)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        account: Account = session.auth_data
        try:
            sent = await self.sending.send_raw(
                account, envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
            )
        except MailfleetError as exc:
            return reply_for(exc)
        except StorageFull as exc:
            log.error("cannot accept submitted mail from %s: %s", account.email, exc)
            return STORAGE_FULL_REPLY
        except Exception:
            # Storage or anything unforeseen: the client keeps the mail and
            # tries again; a 250 here could lose it.
            log.exception("cannot accept submitted mail from %s", account.email)
            return "451 4.3.0 Temporary failure; try again later"
        return f"250 2.0.0 OK queued as {sent.id}"


def _refused(reply: str) -> AuthResult:
    """A failed AUTH that aiosmtpd answers with ``reply``."""
    return AuthResult(success=False, handled=False, message=reply)


def _base64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and non-ASCII text
        return None
