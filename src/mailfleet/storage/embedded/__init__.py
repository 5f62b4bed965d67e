"""Embedded implementations: SQLite metadata and queue, a content-addressed blob
directory, an in-process cache and event bus. Nothing to install."""
