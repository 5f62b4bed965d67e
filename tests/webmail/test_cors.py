"""CORS in a real browser: a page on another loopback port runs ``fetch()``
against the API with a valid token. From an untrusted origin Chromium keeps
the answer from it and its writes never reach the server; from the origin
listed in ``http.trusted_origins`` the same script reads and writes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.webmail.conftest import Webmail

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


# Bound now, so that the server's settings can name the trusted one.
TRUSTED_SOCKET = _bound()
UNTRUSTED_SOCKET = _bound()
TRUSTED_ORIGIN = f"http://127.0.0.1:{TRUSTED_SOCKET.getsockname()[1]}"
UNTRUSTED_ORIGIN = f"http://127.0.0.1:{UNTRUSTED_SOCKET.getsockname()[1]}"
SERVER_SETTINGS = {"http": {"trusted_origins": [TRUSTED_ORIGIN]}}

PAGE = b"<!doctype html><html><head><title>app</title></head><body>an app</body></html>"


async def _serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: no-store\r\n"
        b"Content-Length: " + str(len(PAGE)).encode() + b"\r\nConnection: close\r\n\r\n" + PAGE
    )
    await writer.drain()
    writer.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pages() -> AsyncIterator[None]:
    servers = [
        await asyncio.start_server(_serve_page, sock=sock)
        for sock in (TRUSTED_SOCKET, UNTRUSTED_SOCKET)
    ]
    yield
    for server in servers:
        server.close()
        await server.wait_closed()


# What the foreign page runs: the outcome of each fetch, never an exception.
ATTEMPTS = """async ([api, token]) => {
  const auth = {Authorization: 'Bearer ' + token};
  async function attempt(path, init) {
    try {
      const r = await fetch(api + path, init);
      return {status: r.status, body: await r.text()};
    } catch (e) {
      return {error: String(e)};
    }
  }
  return {
    me: await attempt('/v1/me', {headers: auth}),
    folder: await attempt('/v1/folders', {
      method: 'POST',
      headers: {...auth, 'Content-Type': 'application/json'},
      body: JSON.stringify({name: 'made by ' + location.origin}),
    }),
    login: await attempt('/v1/sessions', {
      method: 'POST',
      headers: {'Content-Type': 'text/plain'},
      body: JSON.stringify({email: 'x@example.com', password: 'not this one'}),
    }),
  };
}"""


async def run_from(webmail: Webmail, origin: str, token: str) -> dict[str, Any]:
    context = await webmail.context()
    page = await context.new_page()  # not watched: the blocked fetches log errors
    await page.goto(origin + "/")
    result: dict[str, Any] = await page.evaluate(ATTEMPTS, [webmail.base_url, token])
    return result


async def test_only_a_trusted_origins_page_reads_and_writes_with_a_token(
    webmail: Webmail, pages: None
) -> None:
    rosa = await webmail.user("rosa")

    foreign = await run_from(webmail, UNTRUSTED_ORIGIN, rosa.token)
    for name in ("me", "folder", "login"):
        assert "error" in foreign[name], (name, foreign[name])  # TypeError: Failed to fetch
        assert rosa.email not in str(foreign[name])

    trusted = await run_from(webmail, TRUSTED_ORIGIN, rosa.token)
    assert trusted["me"]["status"] == 200
    assert rosa.email in trusted["me"]["body"]
    assert trusted["folder"]["status"] == 201
    # A "simple" request (no preflight) from the trusted origin reaches the
    # API and its answer is readable: text/plain is not JSON, 400.
    assert trusted["login"]["status"] == 400
    assert '"error"' in trusted["login"]["body"]

    names = [f["name"] for f in (await rosa.client.get("/v1/folders")).json() if not f["role"]]
    assert names == [f"made by {TRUSTED_ORIGIN}"]
