"""Listing pages kept encoded, each valid while its account's change head
has not moved (decision 0017).

A mail client asks for the same first page again and again: on every
focus, every pushed event, every poll. Nothing in a listing can change
without a change-log entry for its account, so a page encoded at head ``h``
is the answer, byte for byte, as long as the head is still ``h``: checking
that costs one indexed read instead of a page of rows decoded and encoded.
The head is read from the store on every request, never taken from the
event bus, so a client reads its own writes (made through any process)
however late the bus is."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class EncodedPages:
    """A bounded LRU of ``key -> (head, body)``."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._pages: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()

    def get(self, key: Hashable, head: int) -> bytes | None:
        entry = self._pages.get(key)
        if entry is None or entry[0] != head:
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, head: int, body: bytes) -> None:
        if self.max_entries <= 0:
            return
        self._pages[key] = (head, body)
        self._pages.move_to_end(key)
        while len(self._pages) > self.max_entries:
            self._pages.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pages)
