"""Identifiers: 63-bit integers ordered by creation time, unique across a fleet.

Layout: 41 bits of milliseconds since 2024-01-01, 8 bits chosen at random per
process, 14 bits of per-process sequence. Time order lets keyset pagination and
"newest first" indexes follow insertion order; the per-process part lets
stateless processes mint ids with no coordination. The API shows them as
decimal strings, because JavaScript numbers lose precision above 2**53.
"""

from __future__ import annotations

import secrets
import threading
import time

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_NODE = secrets.randbits(8)
_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> int:
    global _last_ms, _seq
    with _lock:
        now = int(time.time() * 1000) - EPOCH_MS
        if now <= _last_ms:
            now = _last_ms
            _seq = (_seq + 1) & 0x3FFF
            if _seq == 0:  # 16384 ids in one millisecond: borrow the next one
                now += 1
        else:
            _seq = secrets.randbits(10)  # spreads ids of idle processes apart
        _last_ms = now
        return (now << 22) | (_NODE << 14) | _seq


def parse_id(text: str) -> int | None:
    """The id in an API path or body, or None when it cannot be one of ours."""
    if not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (UTC): how times are stored."""
    return int(time.time() * 1000)
