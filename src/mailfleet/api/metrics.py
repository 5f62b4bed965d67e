"""``GET /metrics`` (``mailfleet/metrics.py`` says what is counted), and the
API's request latency and realtime connections, counted around the whole
HTTP application."""

from __future__ import annotations

import ipaddress
import time
from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailfleet import metrics
from mailfleet.api.deps import RuntimeDep
from mailfleet.api.events import POLL_PATH, SOCKET_PATH

router = APIRouter(tags=["operations"])


@lru_cache(maxsize=8)
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in allowed)


def _allowed(client: str | None, allowed: tuple[str, ...]) -> bool:
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(allowed))


@router.get("/metrics", include_in_schema=False)
async def metrics_text(request: Request, runtime: RuntimeDep) -> Response:
    client = request.client.host if request.client else None
    if not _allowed(client, tuple(runtime.settings.metrics.allow_from)):
        return JSONResponse(
            {"error": {"code": "forbidden", "message": "metrics are for the operators' network"}},
            status_code=403,
        )
    body = await metrics.render(runtime.stores)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI: each HTTP request's latency by route template and status, and
    the WebSockets and long polls open now."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if scope["path"] != SOCKET_PATH:
                await self.app(scope, receive, send)
                return
            gauge = metrics.REALTIME_CONNECTIONS.labels("websocket")
            gauge.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                gauge.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless the application answers
        polling = scope["path"] == POLL_PATH
        if polling:
            metrics.REALTIME_CONNECTIONS.labels("long_poll").inc()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if polling:
                metrics.REALTIME_CONNECTIONS.labels("long_poll").dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or (POLL_PATH if polling else "unmatched")
            metrics.API_REQUESTS.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - began
            )
