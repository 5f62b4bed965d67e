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


def _origin_netloc(origin: str) -> str | None:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


class BrowserSafety:
    """ASGI middleware: security headers on every HTTP response, and the
    Origin check on state-changing requests.

    The API's CSRF defence is the bearer token in a header, which a foreign
    page can neither read nor make a browser attach. The Origin check closes
    what that leaves: sign-up and login, which take no token. A request with
    no Origin (curl, apps, same-origin GET) is not a browser acting for a
    foreign page and passes."""

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = {n for o in trusted_origins if (n := _origin_netloc(o))}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if scope["method"] in _STATE_CHANGING and origin is not None:
            netloc = _origin_netloc(origin.decode("latin-1"))
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if netloc is None or (netloc != host and netloc not in self.trusted):
                await _refuse(send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                present = {name.lower() for name, _ in out}
                out.extend(h for h in _ALWAYS if h[0] not in present)
                if b"content-security-policy" not in present:
                    out.append((b"content-security-policy", API_CSP.encode()))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_headers)


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
