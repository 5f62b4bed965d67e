"""Issue 12's fleet acceptance at full size: a local fleet
(``deploy/local-fleet``), 200 accounts over both shards, 1,000 mails over SMTP
through HAProxy, each checked delivered exactly once, searchable, and those
of one account pushed over a WebSocket through HAProxy. The CI test
(``tests/fleet/test_acceptance.py``) runs the same code at 40/200.

    .venv/bin/python bench/fleet_acceptance.py
    .venv/bin/python bench/fleet_acceptance.py --accounts 50 --mails 300 --connections 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fleet.acceptance import FLEET_ENV, run_acceptance

from mailfleet.localfleet import Fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--dir", default=f"/var/tmp/mailfleet-fleet-bench-{os.getpid()}")
    args = parser.parse_args()
    root = Path(args.dir)
    fleet = Fleet(root, env=FLEET_ENV)
    began = time.monotonic()
    try:
        state = fleet.start()
        print(f"fleet started in {time.monotonic() - began:.1f} s")
        figures = asyncio.run(
            run_acceptance(
                fleet,
                state,
                accounts=args.accounts,
                mails=args.mails,
                connections=args.connections,
            )
        )
        print("\n".join(figures.lines()))
        print("acceptance: every check passed")
    finally:
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
