"""``deploy/local-fleet resume``: a fleet ``stop`` stopped starts again on its
ports with its data (what ``bench/api_read.py --fleet`` relies on to reuse a
loaded account)."""

from __future__ import annotations

import httpx
import pytest

from mailfleet.localfleet import Fleet, FleetState

pytestmark = pytest.mark.fleet


def test_a_stopped_fleet_resumes_with_its_data(fleet: tuple[Fleet, FleetState]) -> None:
    running, state = fleet
    email, password = state.demo[0]
    running.stop()
    assert not running.running()

    resumed = running.resume()
    # The fixture's state follows (the other tests read its PIDs).
    state.procs[:] = resumed.procs
    assert resumed.ports == state.ports
    assert all(up for *_, up in running.status()), running.status()
    # The demo account, made before the stop, logs in through the balancer.
    answer = httpx.post(
        f"http://127.0.0.1:{state.ports['http']}/v1/sessions",
        json={"email": email, "password": password},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
