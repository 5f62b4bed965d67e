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

Listing pages repeat here, as they do for a client that refetches its Inbox:
with the default settings they come from the page cache (decision 0017);
``--page-cache 0`` measures the pages rebuilt every time.

Sending limits are raised for the served process (the bench sends to itself).
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from listing import EMAIL, PASSWORD, machine_facts, percentile
from mailfleet.config import load_settings
from mailfleet.storage.factory import create_stores
from search import QUERIES, ensure_mailbox

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {  # issue 10: p50 and p99 in ms
    "listing": (1.5, 5.0),
    "me": (None, 1.0),
    "search": (None, 20.0),
    "patch": (None, 10.0),
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


def judge(row: Row, kind: str) -> str:
    p50_target, p99_target = TARGETS[kind]
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
    env = {
        **os.environ,
        "MAILFLEET_DATA_DIR": str(data_dir),
        "MAILFLEET_LIMITS__SEND_PER_MINUTE": "1000000",
        "MAILFLEET_LIMITS__SEND_PER_DAY": "1000000",
    }
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


def prepare(data_dir: Path, messages: int, batch: int, metadata_url: str | None) -> None:
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1},
    }
    if metadata_url:
        values["storage"] = {"metadata_url": metadata_url}
    settings = load_settings(None, values)

    async def load() -> None:
        stores = create_stores(settings)
        await stores.open()
        try:
            await ensure_mailbox(stores, settings, messages, batch)
        finally:
            await stores.close()

    asyncio.run(load())


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=1_000, help="timed calls per request")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sends", type=int, default=200, help="POST /v1/messages to self")
    parser.add_argument("--data-dir", type=Path, help="reuse (and top up) this directory")
    parser.add_argument("--no-wrk", action="store_true", help="skip the concurrent part")
    parser.add_argument(
        "--page-cache",
        type=int,
        help="http.page_cache_entries of the served process (0: every page rebuilt)",
    )
    parser.add_argument(
        "--metadata-url",
        help="postgresql://... : metadata and search on PostgreSQL (the database must exist)",
    )
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="mf-api-read-", dir="/var/tmp"))
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare(data_dir, args.messages, args.batch, args.metadata_url)
    print("machine:")
    for key, value in machine_facts():
        print(f"  {key:<11} {value}")

    print(f"  page cache  {'default' if args.page_cache is None else args.page_cache}")
    print(f"  metadata    {args.metadata_url or 'SQLite in the data directory'}")

    proc, port = start_server(data_dir, args.page_cache, args.metadata_url)
    try:
        anonymous = Client(port)
        status, issued = anonymous.call(
            "POST", "/v1/sessions", {"email": EMAIL, "password": PASSWORD}
        )
        if status != 201:
            raise RuntimeError(f"log in: {status} {issued!r}")
        token = issued["token"]
        client = Client(port, token)
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

        def add(name: str, path: str, kind: str | None = None) -> None:
            row = Row(name, timed(lambda: client.fetch(path), n, w))
            rows.append((row, kind or ""))

        add("GET /healthz (floor)", "/healthz")
        add("GET /v1/me", "/v1/me", "me")
        add("GET /v1/folders", "/v1/folders")
        add("Inbox first page", listing, "listing")
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

        rows.append((Row("GET /v1/messages/{id}", timed(get_message, n, w)), "listing"))
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
            samples = timed(lambda path=path: client.fetch(path), search_iterations, w // 5)
            rows.append((Row(f"search: {name}", samples), "search"))

        floor = rows[0][0]
        print(f"\n{args.messages:,} mails; one keep-alive connection; {n} calls each")
        print(f"(searches {search_iterations} each)\n")
        print(f"{'request':<32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50/floor':>9}  target")
        for row, kind in rows:
            verdict = judge(row, kind) if kind else ""
            print(
                f"{row.name:<32} {row.p50:>8.2f} {row.p99:>8.2f} {row.max:>8.2f} "
                f"{row.p50 / floor.p50:>8.1f}×  {verdict}"
            )

        if not args.no_wrk:
            print("\nwrk -t1 -c20 -d10s (20 connections)")
            script = data_dir / "api_read-ids.lua"
            script.write_text(
                "ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
                "n = 0\n"
                "request = function()\n"
                "  n = n % #ids + 1\n"
                '  return wrk.format("GET", "/v1/messages/" .. ids[n])\n'
                "end\n"
            )
            runs = [
                ("GET /healthz (floor)", "/healthz", None, None),
                ("Inbox first page", listing, token, None),
                ("GET /v1/messages/{id}", "/v1/messages/", token, script),
            ]
            print(f"{'request':<28} {'req/s':>9} {'p50':>9} {'p99':>9} {'non-2xx':>8}")
            for name, path, auth, lua in runs:
                figures = wrk(port, path, auth, lua)
                print(
                    f"{name:<28} {float(figures['rps']):>9,.0f} {figures['50']:>9} "
                    f"{figures['99']:>9} {figures['non2xx']:>8}"
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
