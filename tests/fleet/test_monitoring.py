"""The local fleet watched as an operator would (issue 15): every role
process answers ``/metrics`` on its own operations port, Prometheus (started
by ``Fleet.start(prometheus=True)``, ``deploy/local-fleet start
--prometheus``) scrapes all of them with the alert rules loaded, and
``mailfleet status`` over the fleet's processes shows each with its roles."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import httpx
import pytest

from mailfleet.localfleet import ROLE_COUNTS, Fleet, FleetState

pytestmark = pytest.mark.fleet


async def test_prometheus_scrapes_every_role_process(fleet: tuple[Fleet, FleetState]) -> None:
    running, state = fleet
    targets = running.metrics_targets(state)
    assert len(targets) == sum(ROLE_COUNTS.values())
    async with httpx.AsyncClient(timeout=5) as client:
        for target in targets:
            scraped = await client.get(f"http://{target}/metrics")
            assert scraped.status_code == 200, target
            assert "mailfleet_backend_up" in scraped.text

        api = f"http://127.0.0.1:{state.ports['prometheus']}/api/v1"
        deadline = time.monotonic() + 30
        while True:
            up = (await client.get(f"{api}/query", params={"query": 'up{job="mailfleet"}'})).json()
            results = up["data"]["result"]
            if len(results) == len(targets) and all(r["value"][1] == "1" for r in results):
                break
            assert time.monotonic() < deadline, f"not every process scraped: {results}"
            await asyncio.sleep(0.5)
        roles = (
            await client.get(f"{api}/query", params={"query": "sum by (role) (mailfleet_role)"})
        ).json()["data"]["result"]
        assert {r["metric"]["role"]: int(r["value"][1]) for r in roles} == ROLE_COUNTS
        rules = (await client.get(f"{api}/rules")).json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == 9


async def test_status_shows_every_process_of_the_fleet(fleet: tuple[Fleet, FleetState]) -> None:
    running, state = fleet
    command = [sys.executable, "-m", "mailfleet", "--config", str(running.config_path), "status",
               "--width", "220"]  # fmt: skip
    for target in running.metrics_targets(state):
        command += ["--target", f"http://{target}"]
    shown = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await shown.communicate()
    screen = out.decode()
    assert shown.returncode == 0, screen + err.decode()
    for target in running.metrics_targets(state):
        line = next(line for line in screen.splitlines() if target in line)
        assert re.search(r"│ ok\s+│ ready", line), line
    for role in ROLE_COUNTS:
        assert role in screen, role
    for backend in ("directory", "mailbox", "blobs", "queue", "cache", "events"):
        assert re.search(rf"│ {backend}\s+│ ok\s+│", screen), screen
