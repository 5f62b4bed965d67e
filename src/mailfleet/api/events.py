"""Realtime over HTTP: ``GET /v1/events/ws`` (WebSocket) and ``GET /v1/events``
(long poll). The wire only; what a client is sent and when is ``realtime/``.

WebSocket close codes (RFC 6455 section 7.4.2 leaves 4000-4999 to
applications; ours echo the HTTP status they stand for):
4400 bad first frame or cursor, 4401 no valid token (at connect, or the session
ended: expired, logout, password change, account disabled), 4408 no token within
``realtime.auth_timeout_seconds``, 4429 too slow to read (after a ``reset``
event), 1012 server restarting. Heartbeats are WebSocket pings from the server
(``realtime.heartbeat_seconds``), answered by any client library and browser.

The WebSocket is answered by ``EventsSocket``, plain ASGI in front of the
FastAPI application, not by a FastAPI route: a socket lives for hours, and
what FastAPI keeps for a route while it runs (its dependency machinery's exit
stacks, the middleware's and the router's coroutines) is some forty objects
per socket that every full garbage collection scans (docs/benchmarks.md,
issue 11, session 7).

The long poll keeps its FastAPI route, which answers every request that is
not the common one (no or bad token, bad query, a backend failing); the common
one is answered by ``QuickPoll`` in front of it, with the same result, for
what a client that polls again after every answer costs: FastAPI's
dependencies, validation and response encoding were most of the CPU of a
poll (session 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Query, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from mailfleet.accounts.service import LiveSession, session_expired
from mailfleet.api.deps import RuntimeDep, SessionDep, bearer_token
from mailfleet.errors import MailfleetError, Unauthorized
from mailfleet.ids import now_ms
from mailfleet.realtime import Ending, PeerGone, parse_cursor, push_events
from mailfleet.realtime.feed import SessionEnded, long_poll
from mailfleet.runtime import Runtime
from mailfleet.storage.errors import BackendUnavailable

router = APIRouter(prefix="/v1", tags=["realtime"])

SOCKET_PATH = "/v1/events/ws"
POLL_PATH = "/v1/events"

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429
CLOSE_RESTARTING = 1012

_ENDINGS = {
    Ending.UNAUTHORIZED: (CLOSE_UNAUTHORIZED, "session ended: log in again"),
    Ending.EXPIRED: (CLOSE_UNAUTHORIZED, "session expired: log in again"),
    Ending.TOO_SLOW: (CLOSE_TOO_SLOW, "too slow to read: refetch, then reconnect from the reset"),
    Ending.SHUTDOWN: (CLOSE_RESTARTING, "server restarting: reconnect with your last cursor"),
}


@router.get("/events")
async def poll_events(
    session: SessionDep,
    request: Request,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    timeout: Annotated[float | None, Query(ge=0, le=60)] = None,
) -> dict[str, Any]:
    start = parse_cursor(cursor)
    wait = runtime.settings.realtime.long_poll_seconds if timeout is None else timeout
    try:
        events, last = await _long_poll(runtime, bearer_token(request), session, start, wait)
    except SessionEnded as ended:
        if ended.expired:
            raise session_expired() from None
        raise Unauthorized("the session has ended: log in again", code="invalid_token") from None
    return {"events": events, "cursor": str(last)}


def session_ends(session: LiveSession) -> float:
    """When ``session`` expires, on the event loop's clock."""
    return asyncio.get_running_loop().time() + (session.expires_at - now_ms()) / 1000


async def _long_poll(
    runtime: Runtime, token: str, session: LiveSession, start: int | None, wait: float
) -> tuple[list[dict[str, Any]], int]:
    async def still_authorized() -> bool:
        try:
            await runtime.accounts.session(token)
        except Unauthorized:
            return False
        return True

    return await long_poll(
        runtime.feed,
        session.account.id,
        start,
        wait,
        session_ends=session_ends(session),
        still_authorized=still_authorized,
    )


# What ``poll_events`` accepts, narrowed to the plain spellings: anything else
# goes to the route, which accepts or refuses it.
_PLAIN_TIMEOUT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,6})?")
_PLAIN_CURSOR = re.compile(r"[0-9]{1,19}")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class QuickPoll:
    """ASGI: answers a well-formed ``GET /v1/events`` with a valid token as
    ``poll_events`` would, without FastAPI's machinery; everything else, and a
    poll that fails, goes to ``app`` (the route answers it, errors included)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == POLL_PATH and scope["method"] == "GET":
            body = await self._answer(scope)
            if body is not None:
                headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> bytes | None:
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if token is not None:
                    return None
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    return None
        token = token.strip() if token is not None else ""
        if not token:
            return None
        cursor: str | None = None
        timeout: str | None = None
        seen = set()
        for key, value in parse_qsl(scope["query_string"].decode("latin-1"), True):
            if key in seen:
                return None
            seen.add(key)
            if key == "cursor":
                cursor = value
            elif key == "timeout":
                timeout = value
        if (cursor and not _PLAIN_CURSOR.fullmatch(cursor)) or (
            timeout is not None and not _PLAIN_TIMEOUT.fullmatch(timeout)
        ):
            return None
        wait = self.runtime.settings.realtime.long_poll_seconds
        if timeout is not None:
            wait = float(timeout)
            if wait > 60:
                return None
        try:
            start = parse_cursor(cursor)
            session = await self.runtime.accounts.session(token)
            events, last = await _long_poll(self.runtime, token, session, start, wait)
        except (MailfleetError, BackendUnavailable, SessionEnded):
            # The route answers: the error, or 401 for a session that ended.
            return None
        return orjson.dumps({"events": events, "cursor": str(last)})


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class EventsSocket:
    """ASGI: ``GET /v1/events/ws`` answered here, everything else by ``app``."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == SOCKET_PATH:
            await events_socket(WebSocket(scope, receive, send), self.runtime)
        else:
            await self.app(scope, receive, send)


async def events_socket(websocket: WebSocket, runtime: Runtime) -> None:
    await websocket.accept()
    try:
        token, cursor_text = await _credentials(websocket, runtime)
        try:
            cursor = parse_cursor(cursor_text)
            session = await runtime.accounts.session(token)
        except Unauthorized as exc:
            raise _Refused(CLOSE_UNAUTHORIZED, exc.message) from None
        except MailfleetError as exc:
            raise _Refused(CLOSE_BAD_REQUEST, exc.message) from None
    except _Refused as refused:
        await _close(websocket, refused.code, refused.reason, runtime)
        return
    except WebSocketDisconnect:
        return

    async def still_authorized() -> bool:
        try:
            await runtime.accounts.authenticate(token)
        except Unauthorized:
            return False
        return True

    async def send(text: str) -> None:
        try:
            await websocket.send_text(text)
        except WebSocketDisconnect:
            raise PeerGone() from None

    gone = asyncio.ensure_future(_until_gone(websocket))
    try:
        async with runtime.feed.subscribe(session.account.id, cursor) as subscription:
            ending = await push_events(
                subscription,
                send,
                gone,
                still_authorized,
                runtime.settings.realtime,
                session_ends(session),
            )
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    if ending is not Ending.GONE:
        code, reason = _ENDINGS[ending]
        await _close(websocket, code, reason, runtime)


async def _credentials(websocket: WebSocket, runtime: Runtime) -> tuple[str, str | None]:
    """The token and cursor: from the query, or from the first frame."""
    token = websocket.query_params.get("token")
    cursor = websocket.query_params.get("cursor")
    if token:
        return token, cursor
    timeout = runtime.settings.realtime.auth_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            message = await websocket.receive()
    except TimeoutError:
        raise _Refused(CLOSE_AUTH_TIMEOUT, f"no token within {timeout:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        frame = json.loads(message.get("text") or message.get("bytes") or b"")
    except ValueError:
        frame = None
    if not isinstance(frame, dict) or not isinstance(frame.get("token"), str):
        raise _Refused(
            CLOSE_BAD_REQUEST, 'first frame must be {"token": "...", "cursor": "..."} in JSON'
        )
    first_cursor = frame.get("cursor", cursor)
    if first_cursor is not None and not isinstance(first_cursor, str):
        raise _Refused(CLOSE_BAD_REQUEST, "cursor must be a string")
    return frame["token"], first_cursor


async def _until_gone(websocket: WebSocket) -> None:
    # Frames after the first carry nothing yet; reading them is how a close
    # from the client is seen.
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _close(websocket: WebSocket, code: int, reason: str, runtime: Runtime) -> None:
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    # A client that reads nothing cannot take the close frame either: give up
    # on it after a heartbeat's timeout (the transport drops it then).
    with contextlib.suppress(WebSocketDisconnect, TimeoutError):
        async with asyncio.timeout(runtime.settings.realtime.heartbeat_timeout_seconds):
            await websocket.close(code, reason)
