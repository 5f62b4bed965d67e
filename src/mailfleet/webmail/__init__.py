"""The browser client: static files only (HTML, ES modules, CSS), no build step.

The ``api`` role serves them at ``/`` (``api/webmail.py``); the page talks to
the server through the public HTTP API v1 alone (bearer token in a header,
realtime over ``/v1/events``), exactly as any outside client would.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
