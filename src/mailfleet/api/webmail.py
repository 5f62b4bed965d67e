"""The webmail's files at ``/`` and the headers that keep the page and the
API safe in a browser (decision 0012).

The page is static: ``index.html`` at ``/`` and its scripts, styles and icons
under ``/assets/``, read once at start from ``mailfleet.webmail`` (a package
directory, so an installed wheel serves them too). Every response also gets
``nosniff`` and ``Referrer-Policy``; the page gets a strict
Content-Security-Policy; state-changing requests from a foreign browser
origin are refused.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailfleet.errors import NotFound
from mailfleet.webmail import STATIC_DIR

# Scripts and styles only from this origin: no inline code, no eval. Images
# may come from anywhere only because HTML mail is shown in a sandboxed
# srcdoc frame, which inherits this policy; that frame narrows img-src with a
# policy of its own until the reader allows remote images. Nothing but the
# API itself is reachable by fetch or WebSocket.
PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "frame-src 'self'",
        "child-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ]
)
# JSON and downloads: nothing to run, nothing to frame.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-cache",
}
_STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _load(root: Path) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            kind = "text/javascript"
        if kind.startswith("text/") or kind == "image/svg+xml":
            kind += "; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[path.relative_to(root).as_posix()] = StaticFile(body, kind, etag)
    return files


_FILES = _load(STATIC_DIR)


def _serve(request: Request, name: str, headers: dict[str, str]) -> Response:
    found = _FILES.get(name)
    if found is None:
        raise NotFound("no such file", code="not_found")
    common = {"ETag": found.etag, **headers}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=common)
    return Response(found.body, media_type=found.content_type, headers=common)


@router.get("/")
async def index(request: Request) -> Response:
    return _serve(request, "index.html", _PAGE_HEADERS)


@router.get("/assets/{name:path}")
async def asset(name: str, request: Request) -> Response:
    return _serve(request, name, {"Cache-Control": "no-cache"})


_DEFAULT_PORTS = {"http": 80, "https": 443}
# What a trusted origin's page may send: the API's methods and the two
# request headers it reads. No credentials: the API's are a bearer token in a
# header, never a cookie, so Access-Control-Allow-Credentials is never sent.
_CORS_METHODS = b"GET, POST, PATCH, DELETE"
_CORS_HEADERS = b"Authorization, Content-Type"
_CORS_EXPOSED = b"Retry-After, WWW-Authenticate, Content-Disposition"
_CORS_MAX_AGE = b"600"


def normalize_origin(origin: str) -> str | None:
    """``scheme://host:port`` with the default port written out and the
    host in lower case, or None for what is not an http(s) origin (``null``,
    ``file://``, a path or credentials in it)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port or _DEFAULT_PORTS[parts.scheme]}"


class BrowserSafety:
    """ASGI middleware: security headers on every HTTP response, the Origin
    check on state-changing requests, and CORS for trusted origins.

    The API's CSRF defence is the bearer token in a header, which a foreign
    page can neither read nor make a browser attach. The Origin check closes
    what that leaves: sign-up and login, which take no token. A request with
    no Origin (curl, apps, same-origin GET) is not a browser acting for a
    foreign page and passes.

    An origin is trusted when it is the API's own (the scheme the request came
    in with and its Host) or one of ``http.trusted_origins``, compared whole:
    scheme, host and port (``http://x`` is not ``https://x``). A trusted
    origin's preflight (OPTIONS with Access-Control-Request-Method) is
    answered 204 with the methods and headers the API takes, and its
    responses carry ``Access-Control-Allow-Origin`` naming it; any other
    origin's preflight answers 403 ``cross_origin`` and no response names it,
    so its page can send a GET but not read the answer (decision 0012)."""

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = {n for o in trusted_origins if (n := normalize_origin(o))}

    def _own(self, scope: Scope, host: str) -> str | None:
        return normalize_origin(f"{scope.get('scheme', 'http')}://{host}") if host else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_origin = headers.get(b"origin")
        allow_origin: bytes | None = None
        if raw_origin is not None:
            origin = normalize_origin(raw_origin.decode("latin-1"))
            own = self._own(scope, headers.get(b"host", b"").decode("latin-1"))
            foreign_trusted = origin is not None and origin != own and origin in self.trusted
            if foreign_trusted:
                allow_origin = raw_origin
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await (_preflight(send, raw_origin) if foreign_trusted else _refuse(send))
                return
            if scope["method"] in _STATE_CHANGING and origin != own and not foreign_trusted:
                await _refuse(send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                present = {name.lower() for name, _ in out}
                out.extend(h for h in _ALWAYS if h[0] not in present)
                if b"content-security-policy" not in present:
                    out.append((b"content-security-policy", API_CSP.encode()))
                if raw_origin is not None:
                    out.append((b"vary", b"Origin"))
                if allow_origin is not None:
                    out.append((b"access-control-allow-origin", allow_origin))
                    out.append((b"access-control-expose-headers", _CORS_EXPOSED))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _preflight(send: Send, origin: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", _CORS_METHODS),
                (b"access-control-allow-headers", _CORS_HEADERS),
                (b"access-control-max-age", _CORS_MAX_AGE),
                (b"vary", b"Origin"),
                *_ALWAYS,
                (b"content-security-policy", API_CSP.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send) -> None:
    body = (
        b'{"error": {"code": "cross_origin", "message": "requests from another site'
        b' may not change anything here"}}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_ALWAYS,
                (b"content-security-policy", API_CSP.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
