"""Outbound abuse (issue 13): an account whose outgoing mail scores as spam,
or that keeps sending faster than it may, is throttled, then held for review.

What counts, in the shared cache (every process sees the same counts: the
in-process cache alone, Redis on the fleet), per account and per
``limits.abuse_window_seconds``:
- a send the filters judged spam or reject (``spam_sent``). From
  ``limits.spam_sends_before_throttle`` of them the account is throttled: at
  most ``limits.throttled_sends_per_hour`` sends an hour (429 past them) for
  the rest of the window. From ``limits.spam_sends_before_hold`` it is held;
- a send refused by the per-minute or per-day limit (``rate_limited``). From
  ``limits.rate_limited_sends_before_hold`` of them it is held: a client that
  keeps hammering the limit is a script, not a person.

A hold is kept in the directory (``accounts.held_reason``), so it survives
the window and every restart: every send from the account (API and
submission) is refused (403 ``account_held``, SMTP 550 5.7.1) with the
reason, until an administrator releases it (``mailfleet user release``).
Administrators also hold by hand (``mailfleet user hold --reason``) and see
held accounts and why in ``mailfleet user list``. Reading and receiving mail
go on: a hold stops what the account sends, nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailfleet.config import LimitSettings
from mailfleet.errors import Forbidden
from mailfleet.filters import Reason
from mailfleet.ratelimit import RateLimiter
from mailfleet.storage.interfaces import Cache, DirectoryStore

log = logging.getLogger("mailfleet.abuse")


@dataclass(frozen=True, slots=True)
class Standing:
    """An account allowed to send now, and the counts it is judged by: kept
    per release (``accounts.released_at``), so that a release, made by the
    CLI in another process, starts them afresh in every process."""

    account_id: int
    released_at: int

    def key(self, what: str) -> str:
        return f"abuse:{what}:{self.account_id}:{self.released_at}"


class OutboundAbuse:
    def __init__(
        self,
        directory: DirectoryStore,
        cache: Cache,
        limiter: RateLimiter,
        limits: LimitSettings,
    ) -> None:
        self.directory = directory
        self.cache = cache
        self.limiter = limiter
        self.limits = limits

    async def check_may_send(self, account_id: int) -> Standing:
        """Forbidden (``account_held``) when the account is held;
        RateLimited when it is throttled and past the throttled rate. Read
        from the directory each time, not from the session's cached account:
        a hold stops the next send in every process."""
        account = await self.directory.get_account(account_id)
        if account is not None and account.held_reason is not None:
            raise Forbidden(
                f"sending from {account.email} is held for review: {account.held_reason};"
                " the administrators have been told",
                code="account_held",
            )
        standing = Standing(account_id, account.released_at or 0 if account else 0)
        if await self.cache.get(standing.key("throttled")) is not None:
            await self.limiter.hit(
                standing.key("throttled-sends"),
                self.limits.throttled_sends_per_hour,
                3600,
                "messages while your recent mail is being looked at for spam",
            )
        return standing

    async def spam_sent(self, standing: Standing, reasons: tuple[Reason, ...]) -> None:
        """One more send judged spam (or refused as such)."""
        window = self.limits.abuse_window_seconds
        count, left = await self.cache.incr(standing.key("spam"), window)
        if count >= self.limits.spam_sends_before_throttle:
            await self.cache.set(standing.key("throttled"), b"1", max(1.0, left))
        if count >= self.limits.spam_sends_before_hold:
            said = ", ".join(r.name for r in reasons if r.score > 0)[:200] or "spam"
            await self.hold(
                standing.account_id,
                f"{count} mails scored as spam within {_duration(window)} (last: {said})",
            )

    async def rate_limited(self, standing: Standing) -> None:
        """One more send refused by the account's rate limits."""
        window = self.limits.abuse_window_seconds
        count, _ = await self.cache.incr(standing.key("rate"), window)
        if count >= self.limits.rate_limited_sends_before_hold:
            await self.hold(
                standing.account_id,
                f"sent too much too fast: {count} sends over the rate limit within"
                f" {_duration(window)}",
            )

    async def hold(self, account_id: int, reason: str) -> bool:
        """Holds the account's sending; False when it already was (the first
        reason stands)."""
        held = await self.directory.set_hold(account_id, reason)
        if held:
            log.warning("account %s held for review: %s", account_id, reason)
        return held

    async def release(self, account_id: int) -> bool:
        """Lets the account send again; its counts start afresh."""
        return await self.directory.set_hold(account_id, None)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "an hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} s"
