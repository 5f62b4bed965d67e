"""The ``realtime`` role's business: what a client that follows an account
sees, over WebSocket or long poll (the wire is ``api/events.py``).

Everything is read from the account's change log (``MailboxStore.changes``);
the event bus only says when to read again, and a slow timer reads anyway, so a
lost wake-up delays an event and never loses it. A client's position is its
cursor, the sequence number of the last change it was given: reconnecting with
it, over either transport, replays exactly what it has not seen. Nothing is
queued per client: a client's backlog stays in the log, so a slow client costs
memory for one page of events at most (decision 0011).
"""

from mailfleet.realtime.events import parse_cursor
from mailfleet.realtime.feed import ChangeFeed, Subscription
from mailfleet.realtime.push import Ending, PeerGone, push_events

__all__ = ["ChangeFeed", "Ending", "PeerGone", "Subscription", "parse_cursor", "push_events"]
