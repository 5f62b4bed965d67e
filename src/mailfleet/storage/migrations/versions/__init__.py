"""Alembic revisions of the metadata schema, oldest first. Each freezes what it
uses: no revision imports live mailfleet code (the import-linter contract says so)."""
