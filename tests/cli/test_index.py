"""``mailfleet index rebuild`` stopped midway by SIGTERM says how to go on, and
``--resume`` indexes the rest: afterwards every message is found."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.api.test_search import subjects
from tests.cli.test_import_export import big_mbox
from tests.conftest import Service, User
from tests.test_restart import MAILFLEET, _config, run_cli


def _rebuild_process(data: Path) -> subprocess.Popen[str]:
    args = ("index", "rebuild")
    return subprocess.Popen(
        [*MAILFLEET, "--data-dir", str(data), *_config(data, args), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.embedded_only("stops the rebuild midway by watching the SQLite index fill")
async def test_an_interrupted_rebuild_resumes_and_finds_every_message(
    tmp_path: Path, service: Service, alice: User
) -> None:
    count = 3000  # six of the rebuild's batches of 500
    source = tmp_path / "Inbox.mbox"
    await asyncio.to_thread(big_mbox, source, count)
    data = tmp_path / "data"
    imported = await asyncio.to_thread(run_cli, data, "import", alice.email, str(source))
    assert imported.returncode == 0, imported.stderr

    def indexed() -> int:
        uri = f"file:{data / 'metadata.sqlite'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM search_index").fetchone()[0])

    assert indexed() == count
    rebuild = _rebuild_process(data)
    try:
        # The index is emptied first, then filled a batch at a time: the
        # rebuild is stopped once some of it, not all, is back.
        emptied = False
        deadline = time.monotonic() + 60
        while True:
            assert rebuild.poll() is None, "the rebuild ended before it could be stopped"
            assert time.monotonic() < deadline, "the rebuild never emptied and refilled the index"
            now = await asyncio.to_thread(indexed)
            emptied = emptied or now < count
            if emptied and 0 < now < count:
                rebuild.send_signal(signal.SIGTERM)
                break
            await asyncio.sleep(0.005)
        _, err = await asyncio.to_thread(rebuild.communicate, timeout=60)
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
            await asyncio.to_thread(rebuild.communicate, timeout=60)
    assert rebuild.returncode == 130, err
    assert "index rebuild interrupted" in err and "--resume" in err
    assert 0 < indexed() < count

    resumed = await asyncio.to_thread(run_cli, data, "index", "rebuild", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert indexed() == count  # each message once
    for n in (0, count // 2, count - 1):
        assert await subjects(alice, f'"Bulk {n}"') == {f"Bulk {n}"}
