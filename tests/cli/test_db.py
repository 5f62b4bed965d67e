"""``mailfleet db upgrade|status`` and ``storage.migrate_on_start``: a fleet
migrates once, on purpose, and a process refuses a schema it was not written
for, saying what to run, rather than migrating or failing half way."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from mailfleet.runtime import Runtime
from mailfleet.storage.errors import SchemaOutOfDate
from mailfleet.storage.migrations import HERE, database_state
from tests.conftest import make_settings
from tests.test_restart import free_port, run_cli, serve_command

HEAD = ScriptDirectory(str(HERE)).get_current_head()
OLD = "0004"
NO_MIGRATION = {"storage": {"migrate_on_start": False}}


def metadata_url(data: Path) -> str:
    return f"sqlite:///{data / 'metadata.sqlite'}"


def migrate_to(data: Path, revision: str) -> None:
    """A database as an older mailfleet left it: migrated up to ``revision``."""
    data.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(metadata_url(data))
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(HERE))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def set_revision(data: Path, revision: str) -> None:
    with sqlite3.connect(data / "metadata.sqlite") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.close()


def test_head_is_newer_than_the_old_revision() -> None:
    assert HEAD is not None and HEAD > OLD


async def test_old_schema_is_refused_until_db_upgrade(tmp_path: Path) -> None:
    data = tmp_path / "data"
    migrate_to(data, OLD)
    settings = make_settings(data, NO_MIGRATION)

    with pytest.raises(SchemaOutOfDate) as refused:
        await Runtime.open(settings)
    message = str(refused.value)
    for part in (str(data / "metadata.sqlite"), OLD, str(HEAD), "mailfleet db upgrade"):
        assert part in message, message
    assert database_state(metadata_url(data)).current == OLD  # left as it was

    status = run_cli(data, "db", "status")
    assert status.returncode == 1
    assert f"{OLD} (newest {HEAD}), needs `mailfleet db upgrade`" in status.stdout

    upgraded = run_cli(data, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"{OLD} -> {HEAD}" in upgraded.stdout
    again = run_cli(data, "db", "upgrade")
    assert f"at {HEAD}, up to date" in again.stdout
    status = run_cli(data, "db", "status")
    assert status.returncode == 0
    assert "up to date" in status.stdout

    runtime = await Runtime.open(settings)
    await runtime.close()


def test_serve_refuses_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    migrate_to(data, OLD)
    env = {**os.environ, "MAILFLEET_STORAGE__MIGRATE_ON_START": "false"}
    serve = subprocess.run(
        serve_command(data, free_port()),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 1
    assert "Traceback" not in serve.stderr
    assert f"is at schema revision {OLD}" in serve.stderr
    assert "run `mailfleet db upgrade`" in serve.stderr

    assert run_cli(data, "db", "upgrade").returncode == 0
    assert database_state(metadata_url(data)).up_to_date


async def test_empty_database_is_refused_without_migration(tmp_path: Path) -> None:
    with pytest.raises(SchemaOutOfDate, match="without a schema"):
        await Runtime.open(make_settings(tmp_path / "data", NO_MIGRATION))


@pytest.mark.parametrize("migrate", [True, False])
async def test_newer_unknown_revision_is_refused(tmp_path: Path, migrate: bool) -> None:
    data = tmp_path / "data"
    migrate_to(data, "head")
    set_revision(data, "9999")

    settings = make_settings(data, {"storage": {"migrate_on_start": migrate}})
    with pytest.raises(SchemaOutOfDate, match="newer than this mailfleet knows") as refused:
        await Runtime.open(settings)
    assert refused.value.newer and refused.value.revision == "9999"

    upgrade = run_cli(data, "db", "upgrade")
    assert upgrade.returncode == 1
    assert "newer than this mailfleet knows" in upgrade.stderr
    assert "Traceback" not in upgrade.stderr
    assert database_state(metadata_url(data)).current == "9999"


async def test_migrate_on_start_upgrades_by_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    migrate_to(data, OLD)
    runtime = await Runtime.open(make_settings(data))  # the default: migrate_on_start = true
    await runtime.close()
    assert database_state(metadata_url(data)).current == HEAD
