"""One local fleet (``deploy/local-fleet``'s ``Fleet``) for the tests of this
directory, started once and stopped at the end, in a state directory of its
own under /var/tmp (the postgres user must reach it; pytest's tmp_path is
root's alone)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailfleet.localfleet import Fleet, FleetState
from tests.fleet.acceptance import FLEET_ENV
from tests.support.tools import require_program


@pytest.fixture(scope="session")
def fleet() -> Iterator[tuple[Fleet, FleetState]]:
    for program, package in (
        ("haproxy", "haproxy"),
        ("nats-server", "nats-server"),
        ("redis-server", "redis-server"),
        ("runuser", "util-linux"),
        ("prometheus", "prometheus"),
    ):
        require_program(program, f"apt-get install {package}")
    if not Path("/usr/lib/postgresql/15/bin/initdb").exists():
        require_program("initdb-15", "apt-get install postgresql-15")
    root = Path(f"/var/tmp/mailfleet-fleet-test-{os.getpid()}-{secrets.token_hex(3)}")
    running = Fleet(root, env=FLEET_ENV)
    try:
        state = running.start(prometheus=True)
        yield running, state
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)
