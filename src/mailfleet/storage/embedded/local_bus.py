"""``EventBus`` for the processes sharing one data directory (the embedded
profile: ``mailfleet serve``, its worker-in child, the admin CLI).

Each process binds a Unix datagram socket in the bus directory; a wake-up
("account N has changes up to M", a few bytes) goes to the process's own
watchers directly and to every other socket there with one non-blocking
``sendto`` each. A peer whose queue is full gets the newest head per account
once it has room (its backlog is coalesced, so it stays as small as the
number of accounts that changed). Nothing polls: a wake-up is a hint, the
change log is the truth, so a datagram lost (a process starting, a backlog
dropped at close) only delays a reader until the next one or the slow poll. A socket whose
process died answers ``ECONNREFUSED`` and is removed by the first sender that
meets it. The directory listing is re-read only when the directory changes.

Revocations ("stop trusting account N's cached sessions", ``r<N>``) travel
the same way but are never dropped: a full receive buffer is waited on (up to
``REVOKE_PATIENCE`` seconds), and ``catch_up`` lets a cache read its socket
before it trusts an entry, so a revocation sent before a request arrived is
always seen by that request.

``memory://`` gives the same bus without the sockets: one process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path

from mailfleet.storage.watchers import Watchers

log = logging.getLogger("mailfleet.events")

# sockaddr_un holds 108 bytes; a longer bus directory gets its sockets in a
# short directory of the temp dir named after it (every process finds the same).
_MAX_SOCKET_PATH = 100
# How long a revocation (or a backlog of wake-ups) waits for a peer whose
# receive queue is full. A peer stuck longer is told nothing more: its cache
# entries expire by age, its readers catch up at their slow poll.
REVOKE_PATIENCE = 2.0


def socket_directory(directory: Path) -> Path:
    if len(str(directory)) + 30 <= _MAX_SOCKET_PATH:
        return directory
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"mailfleet-bus-{digest}"


class LocalEventBus:
    def __init__(self, directory: Path | None) -> None:
        self.directory = socket_directory(directory) if directory is not None else None
        self._watchers = Watchers()
        self._socket: socket.socket | None = None
        self._path: Path | None = None
        self._peers: list[str] = []
        self._peers_mtime = -1
        self._peers_read_at = 0.0
        self._revoked_callbacks: list[Callable[[int], None]] = []
        # Wake-ups a peer had no room for (since when, the newest head per
        # account), kept for REVOKE_PATIENCE at most.
        self._backlog: dict[str, tuple[float, dict[int, int]]] = {}
        self._flush: asyncio.Future[None] | None = None

    async def open(self) -> None:
        if self.directory is None or self._socket is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self._path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        sock.bind(str(self._path))
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        self._backlog.clear()
        sock, self._socket = self._socket, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None

    async def ping(self) -> None:
        if self.directory is not None and self._socket is None:
            raise OSError("event bus socket is not open")

    async def publish(self, heads: Mapping[int, int]) -> None:
        if not heads:
            return
        self._watchers.deliver(heads)
        if self._socket is None:
            return
        payload = " ".join(f"{a}:{h}" for a, h in heads.items()).encode()
        for peer in self._peer_paths():
            backlog = self._backlog.get(peer)
            if backlog is not None:  # behind already: join the queue, in order
                _merge(backlog[1], heads)
                self._schedule_flush()
            elif not self._send(payload, peer):
                # The peer's queue is full (Linux keeps ten datagrams per
                # socket by default): keep the newest head per account for it
                # and send them as one datagram when it has room, instead of
                # leaving its readers to the slow poll.
                self._backlog[peer] = (time.monotonic(), dict(heads))
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        while self._backlog and self._socket is not None:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            for peer, (since, heads) in list(self._backlog.items()):
                if now - since > REVOKE_PATIENCE:
                    # A process this far behind reads the log at its slow poll.
                    del self._backlog[peer]
                    continue
                # ~20 bytes a pair: 2,000 accounts fit one datagram easily.
                pairs = list(heads.items())
                sent = 0
                try:
                    while sent < len(pairs):
                        chunk = pairs[sent : sent + 2000]
                        if not self._send(" ".join(f"{a}:{h}" for a, h in chunk).encode(), peer):
                            break
                        sent += len(chunk)
                except OSError as exc:  # not a full queue: this peer will not take it
                    log.warning("wake-ups for %s dropped: %s", peer, exc)
                    sent = len(pairs)
                if sent == len(pairs):
                    del self._backlog[peer]
                else:
                    self._backlog[peer] = (since, dict(pairs[sent:]))

    async def publish_revoked(self, account_ids: Iterable[int]) -> None:
        ids = sorted(set(account_ids))
        if not ids:
            return
        for account_id in ids:
            self._revoked(account_id)
        if self._socket is None:
            return
        payload = " ".join(f"r{a}" for a in ids).encode()
        for peer in self._peer_paths():
            deadline = time.monotonic() + REVOKE_PATIENCE
            while not self._send(payload, peer):
                if time.monotonic() > deadline:
                    log.warning("revocation not delivered to %s: its buffer stays full", peer)
                    break
                await asyncio.sleep(0.002)

    def on_revoked(self, callback: Callable[[int], None]) -> None:
        self._revoked_callbacks.append(callback)

    def catch_up(self) -> None:
        if self._socket is not None:
            self._receive()

    def _send(self, payload: bytes, peer: str) -> bool:
        """False when the peer's buffer is full; a dead peer counts as sent."""
        assert self._socket is not None
        try:
            self._socket.sendto(payload, peer)
        except (ConnectionRefusedError, FileNotFoundError):
            # Its process is gone: nobody will read it again.
            with contextlib.suppress(OSError):
                os.unlink(peer)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EWOULDBLOCK):
                raise
            return False
        return True

    def _revoked(self, account_id: int) -> None:
        for callback in self._revoked_callbacks:
            callback(account_id)

    def watch(self, account_id: int) -> AsyncIterator[int]:
        return self._watchers.watch(account_id)

    def on_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        self._watchers.add(account_id, callback)

    def off_wake(self, account_id: int, callback: Callable[[int], None]) -> None:
        self._watchers.remove(account_id, callback)

    def _receive(self) -> None:
        assert self._socket is not None
        heads: dict[int, int] = {}
        while True:
            try:
                data = self._socket.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            for part in data.split():
                if part[:1] == b"r":
                    with contextlib.suppress(ValueError):
                        self._revoked(int(part[1:]))
                    continue
                account, _, head = part.partition(b":")
                try:
                    a, h = int(account), int(head)
                except ValueError:
                    continue  # not ours: a wake-up is only ever account:head
                heads[a] = max(h, heads.get(a, 0))
        self._watchers.deliver(heads)

    def _peer_paths(self) -> list[str]:
        assert self.directory is not None
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        now = time.monotonic()
        # A directory's mtime can miss two changes within one clock tick: the
        # listing is also re-read every second.
        if mtime != self._peers_mtime or now - self._peers_read_at > 1:
            self._peers_mtime, self._peers_read_at = mtime, now
            own = str(self._path)
            self._peers = [
                str(p) for p in self.directory.iterdir() if p.suffix == ".sock" and str(p) != own
            ]
        return self._peers


def _merge(into: dict[int, int], heads: Mapping[int, int]) -> None:
    for account_id, head in heads.items():
        if head > into.get(account_id, 0):
            into[account_id] = head
