"""Browser tests of the webmail: Debian's Chromium driven by Playwright's
async API, against a real server on loopback ports (one server and one
browser per module, a fresh account and browser context per test).

In CI (``CI=true``) a missing Chromium or playwright fails with the command
that installs it; on a developer machine those tests are skipped."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mailfleet.server import Server
from tests.conftest import PASSWORD, TEST_ROLES, Service, User, make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FOUND = os.path.exists(CHROMIUM) or shutil.which("chromium") is not None
INSTALL = "apt-get install -y chromium && .venv/bin/pip install -e '.[dev]' (playwright)"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        WebSocketRoute,
        async_playwright,
        expect,
    )
except ImportError:  # pragma: no cover - reported below
    async_playwright = None  # type: ignore[assignment]


def _missing() -> str | None:
    if async_playwright is None:
        return "the playwright package is not installed"
    if not CHROMIUM_FOUND:
        return f"Chromium is not installed at {CHROMIUM}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None:
        return
    for item in items:
        if "tests/webmail" not in str(item.path):
            continue
        if os.environ.get("CI") == "true":
            item.add_marker(pytest.mark.usefixtures("_fail_missing_browser"))
        else:
            item.add_marker(pytest.mark.skip(reason=f"{reason}: {INSTALL}"))


@pytest.fixture
def _fail_missing_browser() -> None:
    pytest.fail(f"{_missing()}; install it: {INSTALL}")


if async_playwright is not None:
    expect.set_options(timeout=5000)

_names = itertools.count(1)


class Link:
    """The page's network, cut and restored like a real outage: offline for
    new requests (``set_offline``) and the live WebSocket closed too, which
    Chromium's offline emulation alone leaves open."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.up = True
        self.sockets: list[WebSocketRoute] = []

    async def install(self) -> None:
        await self.context.route_web_socket(re.compile(r".*/v1/events/ws.*"), self._route)

    async def _route(self, ws: WebSocketRoute) -> None:
        if not self.up:
            await ws.close(code=4000, reason="offline")
            return
        ws.connect_to_server()
        self.sockets.append(ws)

    async def cut(self) -> None:
        self.up = False
        await self.context.set_offline(True)
        for ws in self.sockets:
            await ws.close(code=4000, reason="offline")
        self.sockets.clear()

    async def restore(self) -> None:
        self.up = True
        await self.context.set_offline(False)


class Webmail:
    """The server, the browser, and helpers to open a signed-in page."""

    def __init__(self, service: Service, browser: Browser) -> None:
        self.service = service
        self.browser = browser
        self.base_url = service.base_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    async def user(self, local: str, name: str = "") -> User:
        n = next(_names)
        return await self.service.user(f"{local}{n}", name or local.capitalize())

    async def context(self, **options: Any) -> BrowserContext:
        options.setdefault("viewport", {"width": 1280, "height": 820})
        context = await self.browser.new_context(base_url=self.base_url, **options)
        self.contexts.append(context)
        return context

    def watch(self, page: Page) -> Page:
        """Script errors and console errors (a CSP violation is one) fail the test."""
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        return page

    async def open(self, user: User, context: BrowserContext | None = None) -> Page:
        """A page signed in as ``user`` (its session put where the webmail keeps it)."""
        context = context or await self.context()
        await context.add_init_script(
            "if (window.top === window && !sessionStorage.getItem('test-signed-in')) {"
            "  sessionStorage.setItem('test-signed-in', '1');"
            "  localStorage.setItem('mailfleet.session', JSON.stringify("
            f"    {{token: '{user.token}', expires_at: null}}));"
            "}"
        )
        page = self.watch(await context.new_page())
        await page.goto("/")
        await page.wait_for_selector("body[data-ready=true]")
        return page

    async def close_contexts(self) -> None:
        for context in self.contexts:
            await context.close()
        self.contexts.clear()


async def _start(tmp: Path, overrides: dict[str, Any] | None) -> Service:
    settings = make_settings(tmp / "data", overrides)
    server = await Server.open(settings, TEST_ROLES)
    await server.start()
    return Service(server)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def webmail_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Webmail]:
    """``SERVER_SETTINGS`` in a test module: overrides for its server."""
    if _missing():
        pytest.fail(f"{_missing()}; install it: {INSTALL}")
    overrides = getattr(request.module, "SERVER_SETTINGS", None)
    service = await _start(tmp_path_factory.mktemp("webmail"), overrides)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        yield Webmail(service, browser)
        await browser.close()
    await service.close()


@pytest_asyncio.fixture(loop_scope="module")
async def webmail(webmail_module: Webmail) -> AsyncIterator[Webmail]:
    webmail_module.errors.clear()
    yield webmail_module
    errors = list(webmail_module.errors)
    await webmail_module.close_contexts()
    assert not errors, errors


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


__all__ = ["PASSWORD", "Link", "Webmail", "expect", "screenshot_path"]
