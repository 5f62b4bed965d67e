"""Alembic migrations of the SQL metadata store (SQLite and PostgreSQL alike).

New revision: ``.venv/bin/alembic -c src/mailfleet/storage/migrations/alembic.ini
revision --autogenerate -m "what changes"`` against a scratch database
(``-x url=sqlite:////tmp/scratch.sqlite``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

HERE = Path(__file__).parent


def upgrade_to_head(connection: Connection) -> None:
    """Brings the database on ``connection`` to the newest schema."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
