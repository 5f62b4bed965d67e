"""Issue 12's fleet acceptance on a real local fleet (HAProxy, 9 mailfleet
processes, PostgreSQL directory and two shards with a replica, NATS cluster,
Redis, moto S3): mail sent over SMTP through the balancer to accounts on both
shards is delivered exactly once, searchable, and pushed live over a
WebSocket through the balancer. CI runs a smaller count than the issue's
1,000 mails to 200 accounts; ``bench/fleet_acceptance.py`` runs the full one
(``MAILFLEET_FLEET_ACCOUNTS``/``MAILFLEET_FLEET_MAILS`` change these)."""

from __future__ import annotations

import os

import pytest

from mailfleet.localfleet import Fleet, FleetState
from tests.fleet.acceptance import run_acceptance

ACCOUNTS = int(os.environ.get("MAILFLEET_FLEET_ACCOUNTS", "40"))
MAILS = int(os.environ.get("MAILFLEET_FLEET_MAILS", "200"))

pytestmark = pytest.mark.fleet


@pytest.mark.timeout(240)
async def test_mail_through_the_balancer_is_delivered_once_searchable_and_pushed(
    fleet: tuple[Fleet, FleetState],
) -> None:
    figures = await run_acceptance(*fleet, accounts=ACCOUNTS, mails=MAILS)
    print("\n".join(figures.lines()))
    assert figures.pushed == figures.push_expected
