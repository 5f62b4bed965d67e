"""Every HTTP route of the API application, read from the application itself.

A test that must cover every route (tests/api/test_isolation.py) compares
its own table with ``app_routes``: a route added later fails that test until
the table says how to call it, or why it takes nothing of an account's."""

from __future__ import annotations

from typing import Any

from fastapi.routing import iter_route_contexts

from mailfleet.api.app import create_app
from mailfleet.api.events import SOCKET_PATH

# Methods Starlette adds to a GET route by itself.
_IMPLIED = {"HEAD"}


def app_routes(runtime: Any) -> set[tuple[str, str]]:
    """(method, path template) of every route the ``api`` and ``realtime``
    roles answer, the WebSocket included (it is answered in front of the
    application: ``api/events.py``, ``EventsSocket``)."""
    app = create_app(runtime)
    found: set[tuple[str, str]] = {("WEBSOCKET", SOCKET_PATH)}
    # Included routers are flattened, with their prefixes, by FastAPI itself.
    for route in iter_route_contexts(app.routes):
        path, methods = route.path, route.methods
        if path is None:
            raise AssertionError(f"a route without a path: {route!r}")
        if methods is None:  # a WebSocket route
            found.add(("WEBSOCKET", path))
        found.update((m, path) for m in methods or () if m not in _IMPLIED)
    return found
