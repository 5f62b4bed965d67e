"""Pushing one subscription down one socket until something ends it.

What can end it, and what the client is told, is decided here; how a socket is
written and closed belongs to the transport (``api/events.py``):
- the client went away;
- its session expired: at the moment it does (``session_ends``);
- its token stopped being valid (logout, password change, account disabled):
  checked again as soon as the event bus carries a revocation of the account
  (in every process, before the revoking call returns), and every
  ``auth_check_seconds`` whatever happens (a revocation a process never read);
- it is too slow: a frame waited ``send_timeout_seconds`` for the socket to
  take it. The client gets ``reset`` (what it missed is not kept for it) and
  is closed. While a frame waits, nothing more is read from the log for it: a
  slow client holds one page of events at most, and the transport's buffer;
- the server is shutting down.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
from collections.abc import Awaitable, Callable

from mailfleet.config import RealtimeSettings
from mailfleet.realtime.events import Event
from mailfleet.realtime.feed import Subscription


class PeerGone(Exception):
    """The transport raises it when the client has gone away."""


class Ending(enum.Enum):
    GONE = "gone"
    UNAUTHORIZED = "unauthorized"
    EXPIRED = "expired"
    TOO_SLOW = "too_slow"
    SHUTDOWN = "shutdown"


def encode(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"))


async def push_events(
    subscription: Subscription,
    send: Callable[[str], Awaitable[None]],
    gone: asyncio.Future[None],
    still_authorized: Callable[[], Awaitable[bool]],
    settings: RealtimeSettings,
    session_ends: float = math.inf,
) -> Ending:
    """Sends every change after the subscription's cursor, then each change
    as it commits. ``gone`` completes when the client leaves; the session
    ends at ``session_ends`` (the event loop's clock)."""
    loop = asyncio.get_running_loop()
    gone.add_done_callback(lambda _: subscription.wake())
    check_at = min(loop.time() + settings.auth_check_seconds, session_ends)
    first = True  # the replay after the cursor
    try:
        while True:
            if gone.done():
                return Ending.GONE
            if subscription.closed:
                return Ending.SHUTDOWN
            if loop.time() >= session_ends:
                return Ending.EXPIRED
            if subscription.take_revoked() or loop.time() >= check_at:
                if not await still_authorized():
                    return Ending.UNAUTHORIZED
                check_at = min(loop.time() + settings.auth_check_seconds, session_ends)
            # A wake-up for the token check alone reads nothing from the log.
            events = await subscription.read() if subscription.pending() or first else []
            first = False
            if not events:
                await subscription.wait(max(0.0, check_at - loop.time()))
                continue
            for event in events:
                try:
                    async with asyncio.timeout(settings.send_timeout_seconds):
                        await send(encode(event))
                except TimeoutError:
                    return await _too_slow(subscription, send, settings)
    except PeerGone:
        return Ending.GONE


async def _too_slow(
    subscription: Subscription, send: Callable[[str], Awaitable[None]], settings: RealtimeSettings
) -> Ending:
    # The reset waits behind what the socket already holds: a client that
    # reads again within a heartbeat's timeout gets it before the close.
    try:
        async with asyncio.timeout(settings.heartbeat_timeout_seconds):
            await send(encode(subscription.reset()))
    except (TimeoutError, PeerGone):
        pass
    return Ending.TOO_SLOW
