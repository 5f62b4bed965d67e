"""The read path over HTTP, as a client sees it (issue 10).

Builds or reuses the 1,000,000-mail account of ``bench/search.py`` (same
generator, same data directory), serves it with ``mailfleet serve`` (every
role, in its own process, on free loopback ports), then measures from this
process, on one keep-alive connection (``http.client``: the cheapest client
Python has, reading each answer whole without decoding it, so that the
figures are the server's):

- ``GET /healthz``, the HTTP floor, measured in the same run;
- ``GET /v1/me`` (the token check alone), ``GET /v1/folders``;
- the Inbox's first page, first unread page, page 1,000 by cursor and the
  first thread-grouped page (50 each);
- ``POST /v1/messages`` to the account itself (the local send path), then
  ``GET /v1/messages/{id}`` on those delivered copies (real bodies from the
  blob store) and ``PATCH /v1/messages/{id}`` (mark read / unread);
- the 20 typical searches of ``bench/search.py``;

each as p50 / p99 / max in ms beside the floor. Then ``wrk`` (Debian) at 20
concurrent connections on ``/healthz``, the Inbox's first page and
``GET /v1/messages/{id}`` (rotating over the delivered copies): requests a
second and latency percentiles.

    .venv/bin/python bench/api_read.py --data-dir /var/tmp/mf-search-1m
    .venv/bin/python bench/api_read.py --messages 20000 --iterations 200   # quick
    .venv/bin/python bench/api_read.py --data-dir ... --page-cache 0  # every page rebuilt
    createdb -h 127.0.0.1 -U postgres mf_bench && .venv/bin/python bench/api_read.py \
        --data-dir /var/tmp/mf-pg-1m --metadata-url postgresql://postgres@127.0.0.1:5432/mf_bench
    .venv/bin/python bench/api_read.py --fleet /var/tmp/mf-fleet-1m   # through HAProxy

``--fleet DIR`` (issue 12) measures a local fleet (``deploy/local-fleet``)
instead of one ``mailfleet serve``: it starts one in DIR, resumes the one
stopped there (its PostgreSQL data kept), or uses the one running there. The
account is loaded through the stores ``DIR/fleet.toml`` opens, so its rows
land on its shard (``--shard``, default ``shard2``: the one whose streaming
replica serves listings and search; the account is moved there while still
empty); the loader writes no blobs (summaries name a fake hash; only the
copies sent to self during the run go to the fleet's S3). Every request goes
to HAProxy's HTTP port; ``/healthz`` and the Inbox's first page are also
measured directly on ``api-1``, so the balancer's cost shows. The fleet is
stopped at the end unless ``--keep-fleet`` or it was running before.

After a load on PostgreSQL the account's shard gets ``VACUUM ANALYZE`` (what
autovacuum would do in a while) and, with a replica, the run waits for it to
replay everything.

Listing pages repeat here, as they do for a client that refetches its Inbox:
with the default settings they come from the page cache (decision 0017);
``--page-cache 0`` measures the pages rebuilt every time.

Sending limits are raised for the served process (the bench sends to itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from listing import EMAIL, PASSWORD, ensure_account, machine_facts, percentile
from mailfleet.config import Settings, load_settings
from mailfleet.localfleet import Fleet
from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
from mailfleet.storage.distributed.pg_move import move_account
from mailfleet.storage.distributed.pg_shards import PgCluster
from mailfleet.storage.factory import Stores, create_stores
from mailfleet.storage.interfaces import Account
from search import QUERIES, ensure_mailbox, mailbox_size

ROOT = Path(__file__).resolve().parent.parent
Targets = dict[str, tuple[float | None, float | None]]  # kind: p50 and p99 in ms
ISSUE_10_TARGETS: Targets = {
    "listing": (1.5, 5.0),
    "message": (1.5, 5.0),
    "me": (None, 1.0),
    "search": (None, 20.0),
    "patch": (None, 10.0),
}
# Issue 12, metadata on PostgreSQL: listings and search.
ISSUE_12_TARGETS: Targets = {"listing": (None, 10.0), "search": (None, 50.0)}
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1}
# The bench sends to itself.
SEND_LIMITS = {
    "MAILFLEET_LIMITS__SEND_PER_MINUTE": "1000000",
    "MAILFLEET_LIMITS__SEND_PER_DAY": "1000000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Client:
    """One keep-alive HTTP/1.1 connection; every call reads the whole body."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        ctype = response.getheader("content-type", "")
        return response.status, json.loads(raw) if raw and "json" in ctype else raw

    def get(self, path: str) -> Any:
        status, payload = self.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {payload!r}")
        return payload

    def fetch(self, path: str) -> None:
        """A timed GET: the whole body read, not decoded (decoding is the
        client's cost, not the server's)."""
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")


class Row:
    def __init__(self, name: str, samples: list[float], target: str = "") -> None:
        samples.sort()
        self.name = name
        self.p50 = percentile(samples, 50)
        self.p99 = percentile(samples, 99)
        self.max = samples[-1]
        self.target = target


def timed(op: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        op()
    samples = []
    perf = time.perf_counter
    # The client's own garbage collection would land in the server's figures.
    gc.collect()
    gc.disable()
    try:
        for _ in range(iterations):
            t0 = perf()
            op()
            samples.append((perf() - t0) * 1000)
    finally:
        gc.enable()
    return samples


def judge(row: Row, kind: str, targets: Targets) -> str:
    if kind not in targets:
        return ""
    p50_target, p99_target = targets[kind]
    misses = []
    if p50_target is not None and row.p50 >= p50_target:
        misses.append(f"p50 ≥ {p50_target}")
    if p99_target is not None and row.p99 >= p99_target:
        misses.append(f"p99 ≥ {p99_target}")
    return "missed: " + ", ".join(misses) if misses else "met"


def start_server(
    data_dir: Path, page_cache: int | None, metadata_url: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    http_port, smtp_port, submission_port = free_port(), free_port(), free_port()
    env = {**os.environ, "MAILFLEET_DATA_DIR": str(data_dir), **SEND_LIMITS}
    if page_cache is not None:
        env["MAILFLEET_HTTP__PAGE_CACHE_ENTRIES"] = str(page_cache)
    if metadata_url:
        env["MAILFLEET_STORAGE__METADATA_URL"] = metadata_url
    log = open(data_dir / "api_read-serve.log", "ab")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/mailfleet"),
            "serve",
            "--http",
            f"127.0.0.1:{http_port}",
            "--smtp",
            f"127.0.0.1:{smtp_port}",
            "--submission",
            f"127.0.0.1:{submission_port}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mailfleet serve exited ({proc.returncode}); see {log.name}")
        try:
            if Client(http_port).call("GET", "/healthz")[0] == 200:
                return proc, http_port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mailfleet serve did not answer /healthz within 60 s")


def wrk(port: int, path: str, token: str | None, script: Path | None) -> dict[str, str]:
    """``wrk -c20`` for 10 s; requests/s and the latency percentiles."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    cmd = ["wrk", "-t1", "-c20", "-d10s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if script:
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    figures = {"rps": re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)}  # type: ignore[union-attr]
    for p in ("50", "99"):
        match = re.search(rf"^\s+{p}(?:\.000)?%\s+(\S+)", out, re.M)
        figures[p] = match.group(1) if match else "?"
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non2xx"] = errors.group(1) if errors else "0"
    return figures


def prepare(
    settings: Settings, messages: int, batch: int, shard: str | None = None
) -> list[tuple[str, str]]:
    """The bench account with at least ``messages`` mails, through the stores
    ``settings`` open; on PostgreSQL its shard vacuumed and analyzed after a
    load. Returns facts about where it lives, to print."""

    async def load() -> list[tuple[str, str]]:
        stores = create_stores(settings)
        await stores.open()
        try:
            account, _ = await ensure_account(stores, settings)
            if shard is not None:
                await place_on(stores, account, shard)
            before = await mailbox_size(stores, account)
            await ensure_mailbox(stores, settings, messages, batch)
            loaded = await mailbox_size(stores, account) > before
            if isinstance(stores.mailbox, PgMailboxStore):
                return await shard_facts(stores.mailbox.cluster, account, vacuum=loaded)
            return []
        finally:
            await stores.close()

    return asyncio.run(load())


async def place_on(stores: Stores, account: Account, shard: str) -> None:
    """Moves the bench account to ``shard`` while it is still empty."""
    if not isinstance(stores.mailbox, PgMailboxStore):
        raise SystemExit("--shard: the metadata is not on PostgreSQL shards")
    cluster = stores.mailbox.cluster
    current = await cluster.shard_name(account.id, fresh=True)
    if current == shard:
        return
    if await mailbox_size(stores, account):
        raise SystemExit(
            f"the bench account is loaded on shard {current!r} already: use --shard {current}"
            " or a new fleet directory"
        )
    print(f"moving the empty bench account from {current} to {shard}")
    await move_account(cluster, account.id, shard)


async def shard_facts(
    cluster: PgCluster, account: Account, *, vacuum: bool
) -> list[tuple[str, str]]:
    name = await cluster.shard_name(account.id, fresh=True)
    database = cluster.shards[name]
    async with database.connection() as conn:
        if vacuum:
            t0 = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            print(f"VACUUM ANALYZE of shard {name}: {time.perf_counter() - t0:.0f} s")
        version = await conn.fetchval("SHOW server_version")
    if vacuum and database.replica_url:
        t0 = time.perf_counter()
        await database.wait_for_replica(timeout=1800)
        print(f"replica of shard {name} caught up in {time.perf_counter() - t0:.1f} s")
    reads = "listings and search on its streaming replica" if database.replica_url else "primary"
    return [("PostgreSQL", str(version)), ("shard", f"{name} ({reads})")]


@dataclass
class Target:
    """Where the measured requests go."""

    port: int
    work_dir: Path  # wrk's script goes here
    facts: list[tuple[str, str]] = field(default_factory=list)
    targets: Targets = field(default_factory=lambda: ISSUE_10_TARGETS)
    # In front of a balancer: one of the API processes behind it.
    direct_port: int | None = None
    via: str = ""


@contextlib.contextmanager
def served(args: argparse.Namespace) -> Iterator[Target]:
    """One ``mailfleet serve`` over a data directory (and PostgreSQL when
    ``--metadata-url``)."""
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="mf-api-read-", dir="/var/tmp"))
    data_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"data_dir": str(data_dir), "auth": CHEAP_ARGON2}
    if args.metadata_url:
        values["storage"] = {"metadata_url": args.metadata_url}
    facts = prepare(load_settings(None, values), args.messages, args.batch)
    facts += [
        ("page cache", "default" if args.page_cache is None else str(args.page_cache)),
        ("metadata", args.metadata_url or "SQLite in the data directory"),
    ]
    targets = ISSUE_12_TARGETS if args.metadata_url else ISSUE_10_TARGETS
    proc, port = start_server(data_dir, args.page_cache, args.metadata_url)
    try:
        yield Target(port, data_dir, facts, targets, via="mailfleet serve")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def on_fleet(args: argparse.Namespace) -> Iterator[Target]:
    """A local fleet in ``args.fleet``: used if running, resumed if stopped,
    started if there is none; the account loaded through its ``fleet.toml``."""
    sys.path.insert(0, str(ROOT))
    from tests.fleet.acceptance import FLEET_ENV  # its raised limits, cheap Argon2

    env = {**FLEET_ENV, **SEND_LIMITS}
    if args.page_cache is not None:
        env["MAILFLEET_HTTP__PAGE_CACHE_ENTRIES"] = str(args.page_cache)
    fleet = Fleet(args.fleet, env=env)
    was_running = fleet.running()
    began = time.monotonic()
    if was_running:
        print(f"using the fleet running in {args.fleet} (its own settings)")
        state = fleet.load()
        assert state is not None
    elif fleet.state_file.exists():
        print(f"resuming the fleet stopped in {args.fleet}")
        state = fleet.resume()
    else:
        print(f"starting a fleet in {args.fleet}")
        state = fleet.start()
    if not was_running:
        print(f"fleet up in {time.monotonic() - began:.1f} s")
    try:
        settings = load_settings(fleet.config_path, {"auth": CHEAP_ARGON2})
        facts = prepare(settings, args.messages, args.batch, args.shard)
        facts += [
            ("page cache", "default" if args.page_cache is None else str(args.page_cache)),
            ("fleet", f"{args.fleet} (HAProxy on :{state.ports['http']})"),
        ]
        yield Target(
            state.ports["http"],
            Path(args.fleet),
            facts,
            ISSUE_12_TARGETS,
            direct_port=state.ports["api-1"],
            via="HAProxy",
        )
    finally:
        if was_running or args.keep_fleet:
            print(f"\nthe fleet runs on: deploy/local-fleet --dir {args.fleet} stop")
        else:
            fleet.stop()
            print(f"\nfleet stopped; resumed by the next run with --fleet {args.fleet}")


def send_to_self(client: Client, count: int) -> tuple[list[float], list[str]]:
    """``POST /v1/messages`` to the account itself; returns the latencies and
    the subjects to find the delivered copies by."""
    samples = []
    subjects = []
    paragraph = (
        "Hello,\n\nthe quarterly planning notes are below; please review the budget "
        "before Thursday's meeting and reply with your changes.\n\n"
    )
    tag = f"api-read-{int(time.time())}"
    for i in range(count):
        subject = f"{tag} #{i} quarterly planning"
        body: dict[str, Any] = {"to": [EMAIL], "subject": subject, "body": paragraph * 12}
        if i % 4 == 0:
            body["html"] = f"<p>{paragraph * 6}</p><p><b>Thanks</b>, <i>Bench</i></p>"
        t0 = time.perf_counter()
        status, payload = client.call("POST", "/v1/messages", body)
        samples.append((time.perf_counter() - t0) * 1000)
        if status != 202:
            raise RuntimeError(f"POST /v1/messages: {status} {payload!r}")
        subjects.append(subject)
    return samples, subjects


def delivered_ids(client: Client, inbox_id: str, count: int, tag: str) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page = client.get(f"/v1/folders/{inbox_id}/messages?limit=200")
        ids = [m["id"] for m in page["items"] if m["subject"].startswith(tag)]
        if len(ids) >= count:
            return ids
        time.sleep(0.2)
    raise RuntimeError("the messages sent to self did not reach the Inbox within 120 s")


def measure(target: Target, args: argparse.Namespace) -> None:
    """Every request of the module's docstring against ``target``, printed."""
    anonymous = Client(target.port)
    status, issued = anonymous.call("POST", "/v1/sessions", {"email": EMAIL, "password": PASSWORD})
    if status != 201:
        raise RuntimeError(f"log in: {status} {issued!r}")
    token = issued["token"]
    client = Client(target.port, token)
    direct = Client(target.direct_port, token) if target.direct_port else None
    folders = {f["role"]: f for f in client.get("/v1/folders")}
    inbox = folders["inbox"]["id"]
    n, w = args.iterations, args.warmup
    listing = f"/v1/folders/{inbox}/messages"

    cursor = None
    for _ in range(999):
        page = client.get(listing + (f"?cursor={cursor}" if cursor else ""))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    deep = f"{listing}?cursor={cursor}" if cursor else listing

    rows: list[tuple[Row, str]] = []

    def add(name: str, path: str, kind: str = "", on: Client = client) -> None:
        # A new connection, opened by the warm-up: the server closes one left
        # idle (uvicorn after 5 s) while another client was measured.
        on.conn.close()
        rows.append((Row(name, timed(lambda: on.fetch(path), n, w)), kind))

    add("GET /healthz (floor)", "/healthz")
    if direct is not None:
        add("GET /healthz, api-1 direct", "/healthz", on=direct)
    add("GET /v1/me", "/v1/me", "me")
    add("GET /v1/folders", "/v1/folders")
    add("Inbox first page", listing, "listing")
    if direct is not None:
        add("Inbox first page, api-1 direct", listing, "listing", on=direct)
    add("Inbox first unread page", listing + "?is_read=false", "listing")
    add("Inbox page 1,000" if cursor else "Inbox deepest page", deep, "listing")
    add("Inbox by thread", listing + "?group=thread", "listing")

    send_samples, subjects = send_to_self(client, args.sends)
    rows.append((Row("POST /v1/messages (local)", send_samples), ""))
    tag = subjects[0].split(" #")[0]
    ids = delivered_ids(client, inbox, args.sends, tag)
    position = iter(range(10**9))

    def get_message() -> None:
        client.fetch(f"/v1/messages/{ids[next(position) % len(ids)]}")

    rows.append((Row("GET /v1/messages/{id}", timed(get_message, n, w)), "message"))
    flip = iter(range(10**9))

    def patch() -> None:
        i = next(flip)
        status, payload = client.call(
            "PATCH", f"/v1/messages/{ids[i % len(ids)]}", {"is_read": bool(i // len(ids) % 2)}
        )
        if status != 200:
            raise RuntimeError(f"PATCH: {status} {payload!r}")

    rows.append((Row("PATCH /v1/messages/{id}", timed(patch, n, w)), "patch"))
    search_iterations = max(n // 5, 20)
    for name, q in QUERIES:
        path = f"/v1/search?q={quote(q)}"
        samples = timed(partial(client.fetch, path), search_iterations, w // 5)
        rows.append((Row(f"search: {name}", samples), "search"))

    floor = rows[0][0]
    print(f"\n{args.messages:,} mails; one keep-alive connection to {target.via}; {n} calls each")
    print(f"(searches {search_iterations} each)\n")
    print(f"{'request':<32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50/floor':>9}  target")
    for row, kind in rows:
        print(
            f"{row.name:<32} {row.p50:>8.2f} {row.p99:>8.2f} {row.max:>8.2f} "
            f"{row.p50 / floor.p50:>8.1f}×  {judge(row, kind, target.targets)}"
        )

    if not args.no_wrk:
        print(f"\nwrk -t1 -c20 -d10s (20 connections to {target.via})")
        script = target.work_dir / "api_read-ids.lua"
        script.write_text(
            "ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
            "n = 0\n"
            "request = function()\n"
            "  n = n % #ids + 1\n"
            '  return wrk.format("GET", "/v1/messages/" .. ids[n])\n'
            "end\n"
        )
        runs = [
            ("GET /healthz (floor)", target.port, "/healthz", None, None),
            ("Inbox first page", target.port, listing, token, None),
            ("GET /v1/messages/{id}", target.port, "/v1/messages/", token, script),
        ]
        if target.direct_port:
            runs.insert(
                1, ("GET /healthz, api-1 direct", target.direct_port, "/healthz", None, None)
            )
        print(f"{'request':<28} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8}")
        for name, port, path, auth, lua in runs:
            figures = wrk(port, path, auth, lua)
            print(
                f"{name:<28} {float(figures['rps']):>9,.0f} {figures['50']:>9} "
                f"{figures['99']:>9} {figures['non2xx']:>8}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=1_000, help="timed calls per request")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sends", type=int, default=200, help="POST /v1/messages to self")
    parser.add_argument("--no-wrk", action="store_true", help="skip the concurrent part")
    parser.add_argument(
        "--page-cache",
        type=int,
        help="http.page_cache_entries of the served process (0: every page rebuilt)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, help="reuse (and top up) this directory")
    where.add_argument(
        "--fleet",
        type=Path,
        metavar="DIR",
        help="through HAProxy on the local fleet in DIR (started, resumed or used as it runs)",
    )
    parser.add_argument(
        "--metadata-url",
        help="postgresql://... : metadata and search on PostgreSQL (the database must exist)",
    )
    parser.add_argument(
        "--shard", default="shard2", help="--fleet: the account's shard (default shard2)"
    )
    parser.add_argument(
        "--keep-fleet", action="store_true", help="--fleet: leave the fleet running at the end"
    )
    args = parser.parse_args()
    if args.fleet and args.metadata_url:
        parser.error("--fleet uses the fleet's own metadata: no --metadata-url")

    with on_fleet(args) if args.fleet else served(args) as target:
        print("machine:")
        for key, value in machine_facts() + target.facts:
            print(f"  {key:<11} {value}")
        measure(target, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
