"""What ended WebSockets and long polls leave behind: nothing that only the
garbage collector can free. Its full collections take seconds in a process
holding thousands of sockets; and freezing long-lived objects (``gc.freeze``,
tried in docs/benchmarks.md, session 6) is only safe for objects that die by
reference counting."""

from __future__ import annotations

import asyncio
import gc
import types
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import mailfleet.realtime.feed as feed_module

from ..conftest import Service, User
from .conftest import flag, head, poll, socket


@contextmanager
def _garbage_kept() -> Iterator[list[object]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


# What a WebSocket session or a long poll is made of on the server side. Not
# the test's own clients (httpx, websockets' client), and not uvicorn's HTTP
# protocol of a connection upgraded to a WebSocket: it refers to its parser,
# which refers to it, but it is garbage right away (a young collection frees
# it), not after living with the socket.
_SERVER = ("mailfleet", "starlette", "fastapi", "websockets.server", "uvicorn.protocols.websockets")


def _server_side(o: object) -> str | None:
    if isinstance(o, types.FrameType):
        code = o.f_code
    elif isinstance(o, types.CoroutineType):
        code = o.cr_code
    elif isinstance(o, asyncio.Task) and isinstance(o.get_coro(), types.CoroutineType):
        code = o.get_coro().cr_code  # type: ignore[union-attr]
    else:
        module = type(o).__module__
        return f"{module}.{type(o).__qualname__}" if module.startswith(_SERVER) else None
    if any(f"/{name.split('.')[0]}/" in code.co_filename for name in _SERVER):
        return f"{type(o).__name__} of {code.co_qualname}"
    return None


async def _sockets_and_polls(service: Service, user: User, message_id: str) -> None:
    feed = service.runtime.feed
    for _ in range(3):
        async with socket(service, user) as ws:
            async with asyncio.timeout(10):  # followed from now on: the change reaches it
                while feed.watched() != {int(user.id): 1}:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await flag(user, message_id, True)
            await ws.recv()
            await ws.close()
        cursor = await head(user)
        await flag(user, message_id, False)
        assert (await poll(user, cursor, timeout=5))["events"]
        assert not (await poll(user, None, timeout=0.05))["events"]
    # Every socket ended, and the account's watch after its linger.
    async with asyncio.timeout(5):
        while feed._accounts:  # noqa: ASYNC110 (the server's state, polled)
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


async def test_ended_sockets_and_polls_leave_no_cycles(
    alice: User, bob: User, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "WATCH_LINGER_SECONDS", 0.05)
    await bob.send(to=[alice.email], subject="m")
    (message,) = await alice.messages("inbox")
    message_id = message["id"]
    # Once to warm up what is made once per process (caches, the bus's
    # sockets), then the same again, counted.
    await _sockets_and_polls(service, alice, message_id)
    with _garbage_kept() as garbage:
        await _sockets_and_polls(service, alice, message_id)
        gc.collect()
        found = Counter(name for o in garbage if (name := _server_side(o)))
    assert found == Counter(), found.most_common(40)
