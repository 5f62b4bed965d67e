"""The MX (``smtp-in``): acceptance policy at RCPT time, durable acceptance at
DATA. Policy answers (RFC 5321 section 4.2, RFC 3463 enhanced codes):

- unknown hosted recipient: 550 5.1.1; a domain we do not host: 554 5.7.1
  (we are never an open relay: the MX never authenticates anyone);
- more recipients than allowed: 452 4.5.3 (the client sends the rest later);
- message over the size limit: 552 5.3.4 (announced in EHLO SIZE, refused at
  MAIL FROM when declared, enforced while DATA is read);
- a sender that fails authentication where its domain asks for refusal
  (DMARC p=reject) or that forges one of our hosted domains: 550 5.7.1 with
  the reasons, after DATA (filters/sender_auth.py); a check that cannot
  finish within ``filters.smtp_check_seconds`` refuses nothing: the mail is
  accepted and worker-in checks it;
- too many messages from one IP: 451 4.7.1; too many connections: 421 4.7.0;
- any storage failure during DATA: 451 4.3.0, never 250 (a full disk: 452
  4.3.1); a recipient check
  slower than ``smtp.recipient_check_timeout_seconds``: 451 4.3.0.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mailfleet.config import Settings
from mailfleet.delivery.incoming import Envelope, IncomingService, RecipientVerdict
from mailfleet.errors import RateLimited
from mailfleet.filters import FilterResult, FilterUnavailable
from mailfleet.filters.pipeline import refusal
from mailfleet.ratelimit import RateLimiter
from mailfleet.smtp.server import STORAGE_FULL_REPLY
from mailfleet.storage.errors import StorageError, StorageFull

log = logging.getLogger("mailfleet.smtp_in")


def _client_ip(session: Any) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class MxHandler:
    """aiosmtpd handler hooks; everything else is aiosmtpd's default."""

    def __init__(self, service: IncomingService, limiter: RateLimiter, settings: Settings) -> None:
        self.service = service
        self.limiter = limiter
        self.max_recipients = settings.limits.max_recipients
        self.messages_per_minute = settings.smtp.messages_per_minute_per_ip
        self.check_timeout = settings.smtp.recipient_check_timeout_seconds
        self.sender_check_timeout = settings.filters.smtp_check_seconds

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # Insert before the final "250 HELP" line, which must stay last.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        try:
            await self.limiter.hit(
                f"smtp:msg:{_client_ip(session)}", self.messages_per_minute, 60, "messages"
            )
        except RateLimited:
            return "451 4.7.1 Too many messages from your address; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            # A read: cut short, it leaves nothing behind.
            async with asyncio.timeout(self.check_timeout):
                verdict, mailbox = await self.service.check_recipient(address)
        except TimeoutError:
            log.warning("recipient check took over %.0f s", self.check_timeout)
            return "451 4.3.0 Temporary failure; try again later"
        except StorageError:
            log.exception("recipient check failed")
            return "451 4.3.0 Temporary failure; try again later"
        if verdict == RecipientVerdict.INVALID:
            return "553 5.1.3 Recipient address is not valid"
        if verdict == RecipientVerdict.FOREIGN:
            return "554 5.7.1 Relay access denied"
        if verdict == RecipientVerdict.UNKNOWN:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(mailbox)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        mail = Envelope(
            mail_from=envelope.mail_from or "",
            recipients=list(envelope.rcpt_tos),
            client_ip=_client_ip(session),
            helo=session.host_name or "",
            tls=session.ssl is not None,
        )
        checked = await self._check_sender(mail, raw)
        reason = refusal(checked)
        if reason is not None:
            log.info("refused mail from %s: %s", mail.client_ip, reason)
            return f"550 5.7.1 {reason}"
        # No timeout of our own around this: a put cut short here may still
        # commit (a thread holding SQLite's lock, a PubAck lost on the way), so
        # a 451 would be followed by the mail's delivery and the client's
        # retry would make a second copy. Each store bounds its own wait
        # (NATS: the queue URL's publish_patience).
        try:
            queue_id = await self.service.accept(mail, raw, checked=checked)
        except StorageFull as exc:
            log.error("cannot store incoming mail from %s: %s", mail.client_ip, exc)
            return STORAGE_FULL_REPLY
        except StorageError:
            log.exception("cannot store incoming mail from %s", mail.client_ip)
            return "451 4.3.0 Temporary storage failure; try again later"
        return f"250 2.0.0 OK queued as {queue_id}"

    async def _check_sender(self, mail: Envelope, raw: bytes) -> dict[str, FilterResult]:
        """The SMTP-time checks, or nothing when they cannot finish now: only
        reads (DNS, the directory), so cutting them short leaves nothing
        behind, and worker-in runs what is missing."""
        try:
            async with asyncio.timeout(self.sender_check_timeout):
                return await self.service.check_at_smtp(mail, raw)
        except (TimeoutError, FilterUnavailable, StorageError) as exc:
            log.warning("sender checks skipped at SMTP time: %s", exc or type(exc).__name__)
            return {}
