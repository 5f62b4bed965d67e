"""The FastAPI application: routers, and the one place errors become JSON."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from mailfleet import __version__
from mailfleet.api import (
    accounts,
    contacts,
    events,
    folders,
    health,
    messages,
    metrics,
    search,
    threads,
    webmail,
)
from mailfleet.api.page_cache import EncodedPages
from mailfleet.api.schemas import ErrorOut
from mailfleet.errors import MailfleetError, RateLimited
from mailfleet.runtime import Runtime
from mailfleet.storage.errors import BackendUnavailable, StorageFull

log = logging.getLogger("mailfleet.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _describe(errors: list[Any]) -> tuple[str, str]:
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "cannot be parsed")
        return "malformed_json", f"request body is not valid JSON: {reason}"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if first.get("type") == "missing" and not where:
        return "malformed_json", "a JSON object is required as the request body"
    if first.get("type") == "missing":
        return "missing_field", f"{where} is required"
    if first.get("type") == "extra_forbidden":
        return "unknown_field", f"{where} is not a field of this request"
    return "invalid_field", f"{where or 'body'}: {first.get('msg')}"


def create_app(runtime: Runtime, *, api: bool = True, realtime: bool = True) -> FastAPI:
    """The routes of the ``api`` role, of the ``realtime`` role, or both
    (health and readiness always). Serve it through ``asgi_app``."""
    app = FastAPI(
        title="mailfleet",
        version=__version__,
        description="mailfleet HTTP API v1 (see shared/API.md).",
        # Every error, whatever its status, is the one JSON shape (API.md).
        responses={"default": {"model": ErrorOut, "description": "An error"}},
    )
    _declare_errors(app)
    app.state.runtime = runtime
    app.state.pages = EncodedPages(runtime.settings.http.page_cache_entries)

    @app.exception_handler(MailfleetError)
    async def _service_error(_: Request, exc: MailfleetError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(BackendUnavailable)
    async def _backend_down(_: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "a storage backend is unavailable; try again later",
            {"Retry-After": "5"},
        )

    @app.exception_handler(StorageFull)
    async def _storage_full(_: Request, exc: StorageFull) -> JSONResponse:
        log.error("storage full: %s", exc)
        return error_response(
            507,
            "insufficient_storage",
            "the server's storage is full; nothing was saved, try again later",
            {"Retry-After": "60"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = _describe(list(exc.errors()))
        return error_response(400, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    app.include_router(health.router)
    app.include_router(metrics.router)
    if api:
        for module in (accounts, folders, messages, search, threads, contacts):
            app.include_router(module.router)
        # The webmail: ``/`` and ``/assets/*``; any other path, under /v1 or
        # not, still answers the JSON 404.
        app.include_router(webmail.router)
    if realtime:
        app.include_router(events.router)
        # Inside BrowserSafety: its answers get the same headers.
        app.add_middleware(events.QuickPoll, runtime=runtime)
    app.add_middleware(webmail.BrowserSafety, trusted_origins=runtime.settings.http.trusted_origins)
    return app


def _declare_errors(app: FastAPI) -> None:
    """/openapi.json says what the API answers: FastAPI documents a 422 with
    its own validation-error shape on every route with parameters, but a
    request that fails validation is answered 400 (``_invalid_request``), and
    every error, 422 included, is ``ErrorOut``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error = {"$ref": "#/components/schemas/ErrorOut"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": "Well-formed but invalid",
                        "content": {"application/json": {"schema": error}},
                    }
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def asgi_app(runtime: Runtime, *, api: bool = True, realtime: bool = True) -> ASGIApp:
    """What the HTTP server runs: ``create_app``, with the realtime role's
    WebSocket answered in front of it (``api/events.py``, ``EventsSocket``)."""
    app = create_app(runtime, api=api, realtime=realtime)
    return metrics.RequestMetrics(events.EventsSocket(app, runtime) if realtime else app)
