"""``mailfleet blobs sweep`` on the embedded stores of a data directory."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from mailfleet.cli.main import main
from mailfleet.storage.embedded.files import FileBlobStore


async def _put(root: Path, data: bytes) -> str:
    store = FileBlobStore(root)
    await store.open()
    try:
        return (await store.put(data)).hash
    finally:
        await store.close()


def test_sweep_condemns_then_frees_an_orphan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    orphan = asyncio.run(_put(data / "blobs", b"named by nothing"))
    sweep = ["--data-dir", str(data), "blobs", "sweep", "--grace", "0.2"]
    time.sleep(0.3)
    assert main([*sweep, "--dry-run"]) == 0
    assert "1 would be condemned" in capsys.readouterr().out
    assert main(sweep) == 0
    assert "1 were condemned; 0 were freed" in capsys.readouterr().out
    time.sleep(0.3)
    assert main(sweep) == 0
    out = capsys.readouterr().out
    assert f"freed {orphan}" in out and "1 were freed" in out
    with sqlite3.connect(data / "blobs" / "small.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (0,)


def test_sweep_refuses_no_grace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "blobs", "sweep", "--grace", "0"]) != 0
    assert "grace" in capsys.readouterr().err
