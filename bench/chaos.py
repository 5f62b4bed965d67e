"""Issue 14's chaos test, long form: the same test as CI's with more mails,
accounts and connections (``tests/chaos/harness.py``'s ``Load``), either
``tests/chaos/test_chaos.py`` (each role its own process over one data
directory, on either profile) or, with ``--fleet``,
``tests/fleet/test_chaos.py`` (the local fleet through HAProxy). Role
processes are SIGKILLed and restarted at random while SMTP clients send. It
prints the mails accepted, refused and dropped, the kills, and the wall
time; the test's own checks (every 250'd mail delivered exactly once with
its content, counters equal rows, queues drained) must pass.

    .venv/bin/python bench/chaos.py                       # 5,000 mails, embedded
    .venv/bin/python bench/chaos.py --profile distributed --mails 5000
    .venv/bin/python bench/chaos.py --fleet --mails 5000
    .venv/bin/python bench/chaos.py --seconds 120 --seed 7
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("embedded", "distributed"), default="embedded")
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60, help="chaos lasts about this long")
    parser.add_argument("--seed", default="14")
    parser.add_argument("--fleet", action="store_true", help="on the local fleet (~2 min to start)")
    args = parser.parse_args()
    env = {
        **os.environ,
        "MAILFLEET_TEST_BACKENDS": args.profile,
        "CHAOS_MAILS": str(args.mails),
        "CHAOS_ACCOUNTS": str(args.accounts),
        "CHAOS_CONNECTIONS": str(args.connections),
        "CHAOS_SECONDS": str(args.seconds),
        "CHAOS_SEED": args.seed,
    }
    test = (
        "tests/fleet/test_chaos.py::test_acknowledged_mail_survives_killed_roles_on_the_fleet"
        if args.fleet
        else "tests/chaos/test_chaos.py"
    )
    began = time.monotonic()
    result = subprocess.run(
        [str(ROOT / ".venv/bin/pytest"), "-q", "-s", "-p", "no:cacheprovider", test],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - began
    summary = [
        line.removeprefix("fleet ")
        for line in result.stdout.splitlines()
        if line.startswith(("chaos:", "fleet chaos:"))
    ]
    verdict = "passed" if result.returncode == 0 else "FAILED"
    where = "local fleet" if args.fleet else f"profile {args.profile}"
    print(f"{where}: {args.mails} mails, {args.accounts} accounts,")
    print(f"  {args.connections} connections, seed {args.seed}: {verdict} in {elapsed:.0f} s")
    for line in summary:
        kills = re.findall(r"'([a-z0-9-]+)'\)", line)
        print(f"  {line.split(';')[0]}; {len(kills)} kills; lost 0" if verdict == "passed"
              else f"  {line}")  # fmt: skip
    if result.returncode != 0:
        # The roles' own logs come before pytest's report: keep all of it.
        with tempfile.NamedTemporaryFile(
            "w", prefix="mailfleet-chaos-", suffix=".log", delete=False
        ) as out:
            out.write(result.stdout + result.stderr)
        print(result.stdout[-3000:], result.stderr[-2000:])
        print(f"the whole output: {out.name}")
        sys.exit(1)


if __name__ == "__main__":
    main()
