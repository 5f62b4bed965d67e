"""``mailfleet status`` (issue 15) renders one screen from another process,
as an operator runs it: the running service's health, readiness and roles,
every backend up, the queues, the deliveries counted, and the destination
``outgoing`` is waiting on with the reason. When nothing answers on the
target, it says so and exits 1."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from mailfleet.server import ROLES
from tests.api.test_metrics import scrape, until, value
from tests.conftest import StartService
from tests.delivery.test_outbound import REMOTE, start_outbound
from tests.test_restart import free_port, run_cli


async def test_status_shows_processes_backends_queues_and_what_is_deferred(
    start_service: StartService, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    service = await start_outbound(
        start_service,
        routes={REMOTE: f"127.0.0.1:{free_port()}"},  # a remote MX that is down
        delivery={"retry_schedule_seconds": [600]},
        data_dir=data_dir,
    )
    alice = await service.user("alice")
    await alice.send(to=[{"email": f"carol@{REMOTE}"}, {"email": f"dave@{REMOTE}"}])

    async def deferred() -> bool:
        found = await scrape(service.base_url)
        return value(found, "mailfleet_deliveries_total", result="deferred", domain=REMOTE) >= 2

    await until("the remote domain deferred", deferred)

    # Counters are the process's, and earlier tests of this process count too.
    counted = await scrape(service.base_url)
    shown = await asyncio.to_thread(
        run_cli, data_dir, "status", "--target", service.base_url, "--width", "200"
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    screen = shown.stdout
    process = next(line for line in screen.splitlines() if service.base_url in line)
    assert "ok" in process and "ready" in process, process
    for role in ROLES:
        assert role in process, (role, process)
    for role in ("directory", "mailbox", "search", "blobs", "queue", "cache", "events"):
        assert re.search(rf"│ {role}\s+│ ok\s+│", screen), (role, screen)
    assert re.search(r"│ outgoing\s+│ 1\s+│", screen), screen
    assert re.search(r"│ incoming\s+│ 0\s+│", screen), screen
    figures = {
        result: int(value(counted, "mailfleet_deliveries_total", result=result))
        for result in ("delivered", "deferred", "bounced")
    }
    assert figures["deferred"] >= 2
    rate = f"{figures['delivered'] / sum(figures.values()):.1%}"
    assert (
        f"{figures['delivered']} delivered, {figures['deferred']} deferred,"
        f" {figures['bounced']} bounced; success rate {rate}"
    ) in screen, screen
    destination = next(line for line in screen.splitlines() if REMOTE in line)
    assert re.search(rf"│ {REMOTE}\s+│ 1\s+│ 2\s+│", destination), destination
    assert "refused" in destination.lower() or "connect" in destination.lower(), destination


async def test_status_says_when_a_process_is_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    target = f"http://127.0.0.1:{free_port()}"
    shown = await asyncio.to_thread(
        run_cli, data_dir, "status", "--target", target, "--width", "200"
    )
    assert shown.returncode == 1, shown.stdout + shown.stderr
    line = next(line for line in shown.stdout.splitlines() if target in line)
    assert "down: ConnectError" in line, line
    assert re.search(r"│ queue\s+│ ok\s+│", shown.stdout), shown.stdout
