"""The HTTP JSON API v1 (shared/API.md). Routes only translate between the wire
and the services; errors become JSON in one place (app.py)."""
