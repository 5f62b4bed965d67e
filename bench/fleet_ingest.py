"""Issue 12's fleet SMTP benchmark: the local fleet against Postfix in the
same run, then CPU seconds per 1,000 mails for each role and backend with two
and with one process per scaled role.

1. Postfix (``../shared/bench/postfix_anchor.sh``, its own instance on
   127.0.0.1:2525 delivering to Maildir) is measured first, alone on the
   machine, with ``../shared/bench/smtp_bench.py`` (Postfix's ``smtp-source``).
2. A local fleet (``deploy/local-fleet``: PostgreSQL directory + two shards,
   one with a replica, Redis, three NATS nodes, moto's S3 server, HAProxy and
   every role) gets the same scenarios through HAProxy's SMTP port (PROXY
   protocol to the two ``smtp-in``). "accepted" = 250 after DATA (blob in S3
   and item on the replicated ``incoming`` stream); "delivered" = rows in the
   shards' ``messages`` tables (worker-in stored them; visible to the API).
3. CPU: every process's user+system seconds (PostgreSQL: the postmaster,
   its children and its reaped children) around ``--cpu-mails`` mails at 20
   connections, waited until all are stored; then ``smtp-in-2`` and
   ``worker-in-2`` are stopped (HAProxy's health check takes ``smtp-in-2`` out)
   and the same is measured with one process each, in ``--cpu-rounds``
   rounds that alternate two and one (medians). The ``api`` role is measured
   the same way with Inbox listings through HAProxy at a fixed rate under
   saturation (``--api-rate``) with two processes, then with one at that rate
   and at half of it: the last is the load per process each of the two had,
   which is what separates a cost of coordination from the cheaper requests
   of a busier event loop (more of them handled per wake-up).

    .venv/bin/python bench/fleet_ingest.py                  # everything
    .venv/bin/python bench/fleet_ingest.py --runs 1 --scale 0.2 --cpu-mails 1000 --api-seconds 5

Two cores carry the client, Postfix or the fleet's 19 processes: the fleet's
rates are those of the whole system on one small machine, not of one role.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fleet.acceptance import FLEET_ENV

from mailfleet.localfleet import Fleet, FleetState

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = REPO.parent / "shared" / "bench"
MAILFLEET = [str(REPO / ".venv" / "bin" / "mailfleet")]
DOMAIN = "example.test"
RCPT = f"user1@{DOMAIN}"
SENDER = f"bench@{DOMAIN}"
PASSWORD = "benchmark password"
SCALED_ROLES = ("smtp-in", "worker-in")
TICKS = os.sysconf("SC_CLK_TCK")


def run(cmd: list[str], **kwargs: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout  # type: ignore[call-overload,no-any-return]


# -- CPU accounting -------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def cpu_seconds(pid: int, with_children: bool) -> float:
    """utime+stime of ``pid`` (fields 14, 15), with its reaped children's
    (16, 17) and its live children's when asked: PostgreSQL's work is done by
    the backends its postmaster forks."""
    try:
        fields = _stat(pid)
    except FileNotFoundError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
        for child in _children(pid):
            try:
                child_fields = _stat(child)
            except FileNotFoundError:
                continue
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / TICKS


def group_of(name: str, kind: str, extra: dict[str, object]) -> str:
    if kind == "mailfleet":
        return str(extra["role"])
    if kind == "postgres":
        return f"postgres {name.removeprefix('pg-')}"
    return kind


def cpu_by_process(state: FleetState) -> dict[str, tuple[str, float]]:
    """Process name -> (group, CPU seconds so far), for every live process."""
    return {
        p.name: (group_of(p.name, p.kind, p.extra), cpu_seconds(p.pid, p.kind == "postgres"))
        for p in state.procs
        if p.pid > 0 and Path(f"/proc/{p.pid}").exists()
    }


def cpu_per_group(
    before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
) -> dict[str, tuple[int, float]]:
    """Group -> (processes that used CPU, seconds used between the two)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for name, (group, seconds) in after.items():
        if name in before:
            groups[group].append(seconds - before[name][1])
    return {g: (len(used), sum(used)) for g, used in groups.items()}


# -- the fleet --------------------------------------------------------------------


def mailfleet(config: Path, *args: str, stdin: str | None = None) -> str:
    return run([*MAILFLEET, "--config", str(config), *args], input=stdin)


def count_command(state: FleetState) -> str:
    """A shell command printing how many messages both shards hold: psql is a
    few ms of C per poll, not a Python start taken from the measured fleet."""
    counts = [
        f"$(psql -h 127.0.0.1 -p {state.ports[shard]} -U postgres -d mailfleet"
        " -tAc 'select count(*) from messages')"
        for shard in ("pg-shard1", "pg-shard2")
    ]
    return f"echo $(( {' + '.join(counts)} ))"


def stored_messages(state: FleetState) -> int:
    total = 0
    for shard in ("pg-shard1", "pg-shard2"):
        out = run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(state.ports[shard]),
                "-U",
                "postgres",
                "-d",
                "mailfleet",
                "-tAc",
                "select count(*) from messages",
            ]
        )
        total += int(out.strip() or 0)
    return total


def wait_stored(state: FleetState, target: int, timeout: float = 900) -> float:
    began = time.monotonic()
    while stored_messages(state) < target:
        if time.monotonic() - began > timeout:
            raise SystemExit(f"only {stored_messages(state)} of {target} stored after {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - began


def smtp_source(port: int, mails: int, sessions: int = 20, size: int = 4096) -> float:
    began = time.monotonic()
    run(
        [
            "/usr/sbin/smtp-source",
            "-4",
            "-s",
            str(sessions),
            "-l",
            str(size),
            "-m",
            str(mails),
            "-f",
            SENDER,
            "-t",
            RCPT,
            "-M",
            "bench.localhost",
            "-d",
            f"127.0.0.1:{port}",
        ]
    )
    return time.monotonic() - began


# -- phases ---------------------------------------------------------------------


def smtp_bench(target: str, runs: int, scale: float, scenarios: str, *extra: str) -> None:
    """``../shared/bench/smtp_bench.py`` on ``target``, the same scenarios
    for Postfix and the fleet."""
    command = [sys.executable, str(SHARED_BENCH / "smtp_bench.py"), target]
    command += ["--runs", str(runs), "--scale", str(scale), "--scenarios", scenarios]
    subprocess.run([*command, *extra], check=True)


def bench_postfix(out: Path, runs: int, scale: float, scenarios: str) -> None:
    anchor = SHARED_BENCH / "postfix_anchor.sh"
    run([str(anchor), "clean"])
    run([str(anchor), "start"])
    try:
        maildir = "/var/tmp/mail-anchor/vmail/example.test/user1"
        smtp_bench(
            "127.0.0.1:2525", runs, scale, scenarios,
            "--maildir", maildir, "--clean-maildir", "--json", str(out / "postfix.json"),
        )  # fmt: skip
    finally:
        run([str(anchor), "stop"])


def bench_fleet_smtp(state: FleetState, out: Path, runs: int, scale: float, scenarios: str) -> None:
    smtp_bench(
        f"127.0.0.1:{state.ports['smtp']}", runs, scale, scenarios,
        "--rcpt", RCPT, "--sender", SENDER, "--count-cmd", count_command(state),
        "--poll", "0.1", "--pause", "5", "--json", str(out / "ours.json"),
    )  # fmt: skip


def measure_smtp_cpu(state: FleetState, mails: int) -> tuple[dict[str, tuple[int, float]], float]:
    stored = stored_messages(state)
    before = cpu_by_process(state)
    began = time.monotonic()
    smtp_source(state.ports["smtp"], mails)
    wait_stored(state, stored + mails)
    elapsed = time.monotonic() - began
    time.sleep(1)  # acks and the last batch's commits
    return cpu_per_group(before, cpu_by_process(state)), elapsed


async def paced_pages(port: int, path: str, token: str, rate: float, seconds: float) -> int:
    """GETs of ``path`` at ``rate`` a second for ``seconds`` over 10 keep-alive
    connections (raw asyncio streams: the cheapest client); returns how many
    were answered 200. At a rate under saturation, a process's CPU per request
    is its own work, not the cost of more runnable processes than cores."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    due: asyncio.Queue[None] = asyncio.Queue()
    answered = 0

    async def connection() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                await due.get()
                writer.write(request)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                answered += status.split()[1] == b"200"
                due.task_done()
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(10)]
    began = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - began) < seconds:
        while sent < elapsed * rate:
            due.put_nowait(None)
            sent += 1
        await asyncio.sleep(0.005)
    await due.join()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return answered


def inbox_path(state: FleetState, token: str) -> str:
    url = f"http://127.0.0.1:{state.ports['http']}/v1/folders"
    headers = {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
        inbox = next(f for f in json.load(r) if f["role"] == "inbox")["id"]
    return f"/v1/folders/{inbox}/messages?limit=50"


def measure_api_cpu(
    state: FleetState, token: str, path: str, rate: float, seconds: float
) -> tuple[dict[str, tuple[int, float]], float]:
    asyncio.run(paced_pages(state.ports["http"], path, token, rate, 1))  # warm both caches
    before = cpu_by_process(state)
    began = time.monotonic()
    count = asyncio.run(paced_pages(state.ports["http"], path, token, rate, seconds))
    elapsed = time.monotonic() - began
    groups = cpu_per_group(before, cpu_by_process(state))
    return {g: (n, s * 1000 / count) for g, (n, s) in groups.items()}, count / elapsed


def medians(
    rounds: dict[str, list[dict[str, tuple[int, float]]]],
) -> dict[str, dict[str, tuple[int, float]]]:
    """Each group's median over the rounds, per configuration."""
    return {
        label: {
            group: (
                tables[0][group][0],
                statistics.median(t[group][1] for t in tables if group in t),
            )
            for group in tables[0]
        }
        for label, tables in rounds.items()
    }


def print_cpu_table(title: str, per_1000: dict[str, dict[str, tuple[int, float]]]) -> None:
    labels = list(per_1000)
    print(f"\n{title}")
    header = "".join(f"{label:>26s}" for label in labels)
    print(f"{'role / backend':22s}{header}{'first/last':>11s}")
    groups = sorted({g for table in per_1000.values() for g in table})
    for group in groups:
        cells = []
        values = []
        for label in labels:
            n, seconds = per_1000[label].get(group, (0, 0.0))
            values.append(seconds)
            cells.append(f"{seconds:8.2f} s ({n} proc)")
        ratio = f"{values[0] / values[-1]:8.2f}x" if values[-1] > 0.005 else "       -"
        print(f"{group:22s}" + "".join(f"{c:>26s}" for c in cells) + ratio)
    totals = [sum(s for _, s in per_1000[label].values()) for label in labels]
    print(f"{'total':22s}" + "".join(f"{t:>22.2f} s   " for t in totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=f"/var/tmp/mailfleet-fleet-ingest-{os.getpid()}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--scenarios", default="seq-4k,par20-4k")
    parser.add_argument("--cpu-mails", type=int, default=3000)
    parser.add_argument("--api-rate", type=float, default=500, help="Inbox pages a second")
    parser.add_argument("--api-seconds", type=float, default=15)
    parser.add_argument("--cpu-rounds", type=int, default=3, help="2-then-1 rounds, medians")
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--skip-smtp", action="store_true", help="only the CPU phases")
    parser.add_argument("--keep", action="store_true", help="leave the fleet running")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fleet-ingest-", dir="/tmp"))
    print(f"results in {out}")
    print(f"host: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    if not args.skip_postfix and not args.skip_smtp:
        print("== Postfix, alone on the machine")
        bench_postfix(out, args.runs, args.scale, args.scenarios)

    root = Path(args.dir)
    os.environ.update(FLEET_ENV)
    fleet = Fleet(root, env=FLEET_ENV)
    began = time.monotonic()
    state = fleet.start()
    print(f"== fleet started in {time.monotonic() - began:.1f} s ({len(state.procs)} processes)")
    try:
        config = root / "fleet.toml"
        mailfleet(config, "domain", "add", DOMAIN)
        for address in (RCPT, SENDER):
            mailfleet(config, "user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
        if not args.skip_smtp:
            print("== the fleet, through HAProxy")
            bench_fleet_smtp(state, out, args.runs, args.scale, args.scenarios)
            if (out / "postfix.json").exists():
                subprocess.run(
                    [
                        sys.executable,
                        str(REPO / "bench" / "compare_ingest.py"),
                        str(out / "postfix.json"),
                        str(out / "ours.json"),
                    ],
                    check=True,
                )

        request = urllib.request.Request(
            f"http://127.0.0.1:{state.ports['http']}/v1/sessions",
            data=json.dumps({"email": RCPT, "password": PASSWORD}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request) as r:
            token = json.load(r)["token"]

        # Rounds alternate two and one process per scaled role, so that a
        # drift of the machine over the run weighs on both alike; the
        # tables show each figure's median over the rounds.
        smtp_rounds: dict[str, list[dict[str, tuple[int, float]]]] = defaultdict(list)
        api_rounds: dict[str, list[dict[str, tuple[int, float]]]] = defaultdict(list)
        floor_rounds: dict[str, list[dict[str, tuple[int, float]]]] = defaultdict(list)
        for round_number in range(1, args.cpu_rounds + 1):
            for processes in (2, 1):
                for role in (*SCALED_ROLES, "api"):
                    if processes == 1:
                        fleet.stop_role_process(f"{role}-2")
                    else:
                        fleet.start_role_process(f"{role}-2")
                time.sleep(3)  # HAProxy's health check (inter 1s fall 2 rise 2)
                state = fleet.load() or state
                print(
                    f"== round {round_number}, {processes} per scaled role:"
                    f" {args.cpu_mails} mails, 20 connections"
                )
                measure_smtp_cpu(state, 500)  # warm: connections and caches
                groups, elapsed = measure_smtp_cpu(state, args.cpu_mails)
                label = f"{processes} smtp-in, {processes} worker-in"
                smtp_rounds[label].append(
                    {g: (n, s * 1000 / args.cpu_mails) for g, (n, s) in groups.items()}
                )
                print(f"   {args.cpu_mails / elapsed:.0f} mails/s sent and stored")
                # One process at the rate two shared, and at half of it: the
                # second is the same load per process as each of the two.
                rates = [args.api_rate] if processes == 2 else [args.api_rate, args.api_rate / 2]
                # /healthz is the floor: no backend, nothing shared, so
                # whatever it costs more with two processes is the machine's.
                inbox = inbox_path(state, token)
                for pace in rates:
                    for path, rounds in ((inbox, api_rounds), ("/healthz", floor_rounds)):
                        per_1000, rate = measure_api_cpu(state, token, path, pace, args.api_seconds)
                        rounds[f"{processes} api @ {pace:.0f}/s"].append(per_1000)
                        print(f"   {rate:.0f} GET {path.split('?')[0]}/s ({processes} api)")
        print_cpu_table("CPU seconds per 1,000 mails (SMTP in, stored)", medians(smtp_rounds))
        print_cpu_table(
            "CPU seconds per 1,000 Inbox pages (HTTP, through HAProxy)", medians(api_rounds)
        )
        print_cpu_table("CPU seconds per 1,000 GET /healthz (the floor)", medians(floor_rounds))
    finally:
        if args.keep:
            print(f"fleet left running in {root}: deploy/local-fleet --dir {root} stop")
        else:
            fleet.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
