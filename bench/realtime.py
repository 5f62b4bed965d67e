"""The realtime role under load: memory per idle WebSocket, and the time from a
mailbox commit to its event at the client, over WebSocket and long poll.

One ``mailfleet serve --roles realtime`` process per phase, on its own data directory.
This process makes the accounts (one message each, a session each), then:
1. opens ``--clients`` idle WebSockets (one per account) from ``--client-procs``
   client processes; RSS of the realtime process before and after, per socket;
   its CPU while they are idle (token re-checks and the slow poll);
2. at each ``--rates`` events/s for ``--seconds``: flags or unflags one message
   of a different account each time (``MailboxStore.update_message``, one
   change per write), and times commit (the write call returned) to receipt;
3. the same with ``--pollers`` long-poll clients (``GET /v1/events``).

    .venv/bin/python bench/realtime.py                         # 10,000 sockets
    .venv/bin/python bench/realtime.py --clients 1000 --pollers 200 --seconds 5

Clocks: every process reads ``time.time()`` on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import os
import random
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENT_CHILD = "--client-child"


# -- client processes -------------------------------------------------------------


async def _ws_clients(url: str, clients: list[list[Any]]) -> None:
    from websockets.asyncio.client import connect

    received: dict[int, list[float]] = {}
    sockets: list[Any] = []
    failed = 0
    gate = asyncio.Semaphore(50)

    async def run(index: int, token: str) -> None:
        nonlocal failed
        async with gate:
            try:
                ws = await connect(
                    url, proxy=None, compression=None, ping_interval=None, open_timeout=60
                )
            except Exception:
                failed += 1
                return
        sockets.append(ws)
        await ws.send(json.dumps({"token": token}))
        times = received.setdefault(index, [])
        try:
            async for frame in ws:
                now = time.time()
                if '"message.updated"' in frame:
                    times.append(now)
        except Exception:
            pass

    tasks = [asyncio.create_task(run(i, t)) for i, t in clients]
    while len(sockets) + failed < len(clients):  # noqa: ASYNC110 (counts kept by many tasks)
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": len(sockets), "failed": failed}), flush=True)
    await _serve_commands(received)
    for ws in sockets:
        await ws.close()
    for task in tasks:
        task.cancel()


async def _poll_clients(base: str, clients: list[list[Any]]) -> None:
    """Long polls over plain asyncio streams, one keep-alive connection per
    client: a full HTTP client library costs more CPU per request than the
    server's answer, and 1,000 of them reconnecting after every answer made
    the client processes, not the server, the bottleneck."""
    host, port = base.removeprefix("http://").split(":")
    received: dict[int, list[float]] = {}
    ready = 0

    async def get(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, token: str
    ) -> Any:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return json.loads(await reader.readexactly(length))

    async def run(index: int, token: str) -> None:
        nonlocal ready
        reader, writer = await asyncio.open_connection(host, int(port))
        cursor = (await get(reader, writer, "/v1/events?timeout=0", token))["cursor"]
        ready += 1
        times = received.setdefault(index, [])
        while True:
            answer = await get(reader, writer, f"/v1/events?cursor={cursor}&timeout=25", token)
            now = time.time()
            times.extend(now for e in answer["events"] if e["type"] == "message.updated")
            cursor = answer["cursor"]

    tasks = [asyncio.create_task(run(i, t)) for i, t in clients]
    while ready < len(clients):  # noqa: ASYNC110 (a count kept by many tasks)
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": ready, "failed": 0}), flush=True)
    await _serve_commands(received)
    for task in tasks:
        task.cancel()


async def _serve_commands(received: dict[int, list[float]]) -> None:
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command == "report":
            print(json.dumps({str(k): v for k, v in received.items()}), flush=True)
            for times in received.values():
                times.clear()
        else:  # "stop" or EOF
            return


def client_main() -> None:
    # A client's garbage collection (thousands of sockets' objects) would be
    # timed as the server's latency; the children live for minutes.
    gc.disable()
    config = json.loads(sys.stdin.readline())
    if config["mode"] == "ws":
        asyncio.run(_ws_clients(config["url"], config["clients"]))
    else:
        asyncio.run(_poll_clients(config["url"], config["clients"]))


# -- the bench --------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_accounts(stores: Any, count: int) -> list[tuple[int, str, int]]:
    """(account id, token, message id) for ``count`` accounts, made straight
    on the stores (no password hashing: the bench logs no one in)."""
    from mailfleet.ids import new_id, now_ms
    from mailfleet.storage.interfaces import (
        FOLDER_ROLES,
        Account,
        Domain,
        Folder,
        NewMessage,
        Session,
    )

    await stores.directory.add_domain(Domain("bench.test", False, now_ms()))
    made: list[tuple[int, str, int]] = []
    messages: list[NewMessage] = []

    async def one(n: int) -> None:
        account_id = new_id()
        folders = [Folder(account_id, new_id(), r.capitalize(), r, 0, 0) for r in FOLDER_ROLES]
        await stores.mailbox.create_mailbox(account_id, folders)
        await stores.directory.create_account(
            Account(account_id, f"u{n}@bench.test", "", "x", False, now_ms())
        )
        secret = secrets.token_bytes(32)
        await stores.directory.create_session(
            Session(account_id, hashlib.sha256(secret).digest(), now_ms() + 86_400_000)
        )
        token = f"{account_id}.{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"
        mid = new_id()
        messages.append(
            NewMessage(
                account_id=account_id,
                id=mid,
                folder_id=folders[0].id,
                thread_id=mid,
                received_at=now_ms(),
                ingest_key=f"bench:{mid}",
                sender=None,
                to=(),
                cc=(),
                bcc=(),
                subject="bench",
                snippet="",
                message_id_header=f"<{mid}@bench.test>",
                in_reply_to=None,
                references=(),
                raw_hash="0" * 64,
                raw_size=1,
                body_hash=None,
                html_hash=None,
            )
        )
        made.append((account_id, token, mid))

    for start in range(0, count, 500):
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 500))))
        batch, messages[:] = messages[:], []
        await stores.mailbox.store_messages(batch)
    return made


class Clients:
    """Client processes, each holding a share of the connections."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, mode: str, url: str, shares: list[list[list[Any]]]) -> int:
        for share in shares:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                CLIENT_CHILD,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**28,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"mode": mode, "url": url, "clients": share}).encode())
            proc.stdin.write(b"\n")
            await proc.stdin.drain()
            self.procs.append(proc)
        ready = 0
        for proc in self.procs:
            assert proc.stdout is not None
            answer = json.loads(await proc.stdout.readline())
            ready += answer["ready"]
            if answer["failed"]:
                print(f"  {answer['failed']} connections failed in one client process")
        return ready

    async def report(self) -> dict[int, list[float]]:
        merged: dict[int, list[float]] = {}
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"report\n")
            await proc.stdin.drain()
            merged.update({int(k): v for k, v in json.loads(await proc.stdout.readline()).items()})
        return merged

    async def stop(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs = []


# Each account's message flagged or not, across phases: a write that changes
# nothing makes no change (and no event).
FLAGGED: dict[int, bool] = {}


async def drive(
    stores: Any, accounts: list[tuple[int, str, int]], rate: int, seconds: float
) -> dict[int, list[float]]:
    """Writes ``rate`` changes a second for ``seconds``, each to the next
    account in turn; the commit times per account index."""
    from mailfleet.storage.interfaces import MessagePatch

    loop = asyncio.get_running_loop()
    committed: dict[int, list[float]] = {}
    busy: set[int] = set()
    order = list(range(len(accounts)))
    random.Random(rate).shuffle(order)
    pending: set[asyncio.Task[None]] = set()

    async def write(index: int) -> None:
        account_id, _, mid = accounts[index]
        flagged = FLAGGED[account_id] = not FLAGGED.get(account_id, False)
        busy.add(index)
        try:
            await stores.mailbox.update_message(account_id, mid, MessagePatch(is_flagged=flagged))
            committed.setdefault(index, []).append(time.time())
        finally:
            busy.discard(index)

    began = loop.time()
    total = int(rate * seconds)
    n = 0
    skipped = 0
    while n < total:
        due = began + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        index = order[n % len(order)]
        if index in busy:  # one write at a time per account keeps receipts in order
            skipped += 1
            n += 1
            continue
        task = asyncio.create_task(write(index))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    await asyncio.gather(*pending)
    achieved = sum(len(v) for v in committed.values()) / (loop.time() - began)
    print(f"    wrote {sum(len(v) for v in committed.values())} changes, {achieved:.0f}/s", end="")
    print(f" ({skipped} skipped: account still writing)" if skipped else "")
    return committed


def latencies(
    committed: dict[int, list[float]],
    received: dict[int, list[float]],
    samples: list[tuple[float, float]] | None = None,
) -> tuple[list[float], int]:
    """Commit-to-receipt times in ms, and how many commits were not received;
    ``samples`` gets each (commit time, ms) when given."""
    out: list[float] = []
    missing = 0
    for index, commits in committed.items():
        got = received.get(index, [])
        missing += max(0, len(commits) - len(got))
        for c, r in zip(commits, got, strict=False):
            out.append(max(0.0, (r - c) * 1000))
            if samples is not None:
                samples.append((c, out[-1]))
    return out, missing


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    values = sorted(values)
    p50 = statistics.median(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {values[-1]:.1f} ms (n={len(values)})"


def shares(items: list[list[Any]], parts: int) -> list[list[list[Any]]]:
    return [items[i::parts] for i in range(parts)]


async def run_phase(
    name: str,
    mode: str,
    url: str,
    stores: Any,
    accounts: list[tuple[int, str, int]],
    server_pid: int,
    procs: int,
    rates: list[int],
    seconds: float,
    results: dict[str, Any],
    samples_dir: Path | None = None,
) -> None:
    clients = Clients()
    before_rss = rss_kb(server_pid)
    began = time.monotonic()
    ready = await clients.start(
        mode, url, shares([[i, token] for i, (_, token, _) in enumerate(accounts)], procs)
    )
    took = time.monotonic() - began
    print(f"  {name}: {ready} connected from {procs} client processes in {took:.1f} s")
    await asyncio.sleep(5)  # settle: handshakes done, first token re-checks run
    after_rss = rss_kb(server_pid)
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    await asyncio.sleep(10)
    idle_cpu = (cpu_seconds(server_pid) - cpu0) / (time.monotonic() - t0)
    per = (after_rss - before_rss) * 1024 / max(1, ready)
    print(
        f"    realtime RSS {before_rss / 1024:.0f} MB -> {after_rss / 1024:.0f} MB:"
        f" {per / 1024:.1f} KB per {mode} client; idle CPU {idle_cpu * 100:.0f}% of a core"
    )
    phase: dict[str, Any] = {
        "connected": ready,
        "rss_before_kb": before_rss,
        "rss_after_kb": after_rss,
        "bytes_per_client": per,
        "idle_cpu_share": idle_cpu,
    }
    await clients.report()  # drop what arrived before the timed phases
    for rate in rates:
        print(f"  {name} at {rate} events/s for {seconds:g} s:")
        cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
        committed = await drive(stores, accounts, rate, seconds)
        await asyncio.sleep(2)  # stragglers
        cpu = (cpu_seconds(server_pid) - cpu0) / (time.monotonic() - t0)
        timed: list[tuple[float, float]] = []
        values, missing = latencies(committed, await clients.report(), timed)
        print(f"    commit -> receipt {summary(values)}; {missing} not received;", end="")
        print(f" realtime CPU {cpu * 100:.0f}% of a core")
        ordered = sorted(values)
        phase[f"rate_{rate}"] = {
            "p50_ms": statistics.median(ordered) if ordered else None,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None,
            "missing": missing,
            "samples": len(values),
            "cpu_share": cpu,
        }
        if samples_dir is not None:
            # Each event's commit time and latency, to set against a log of the
            # server's garbage collections (docs/benchmarks.md, session 7).
            path = samples_dir / f"{name}-{rate}.json"
            path.write_text(json.dumps({"pid": server_pid, "samples": sorted(timed)}))
    results[name] = phase
    await clients.stop()


async def start_realtime(
    data_dir: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, str]:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailfleet",
        "--data-dir",
        str(data_dir),
        "serve",
        "--roles",
        "realtime",
        "--http",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert server.stdout is not None
    while not (found := re.search(rb"HTTP API on (http://\S+)", await server.stdout.readline())):
        pass
    return server, found.group(1).decode()


async def main(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    from mailfleet.config import load_settings
    from mailfleet.storage.factory import create_stores

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mf-realtime-"))
    settings = load_settings(None, {"data_dir": str(data_dir)})
    stores = create_stores(settings)
    await stores.open()
    count = max(args.clients, args.pollers)
    began = time.monotonic()
    accounts = await make_accounts(stores, count)
    print(f"{count} accounts with a message and a session each in {time.monotonic() - began:.0f} s")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.auth_check_seconds:
        env["MAILFLEET_REALTIME__AUTH_CHECK_SECONDS"] = str(args.auth_check_seconds)
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "client_procs": args.client_procs,
        "auth_check_seconds": args.auth_check_seconds or "default",
    }
    rates = [int(r) for r in args.rates.split(",")]
    phases = []
    if args.clients:
        phases.append(("websocket", "ws", args.clients, args.client_procs))
    if args.pollers:
        phases.append(("long-poll", "poll", args.pollers, max(1, args.client_procs // 2)))
    try:
        # A realtime process per phase: the first phase's 10,000 closed sockets
        # would otherwise be collected (a full collection of their cycles)
        # during the second phase's timed writes.
        for name, mode, count_, procs in phases:
            server, base = await start_realtime(data_dir, env)
            try:
                print(
                    f"realtime process {server.pid} on {base}; {os.cpu_count()} cores shared"
                    f" by it, this process (writes) and {procs} client processes"
                )
                url = base.replace("http://", "ws://") + "/v1/events/ws" if mode == "ws" else base
                await run_phase(
                    name,
                    mode,
                    url,
                    stores,
                    accounts[:count_],
                    server.pid,
                    procs,
                    rates,
                    args.seconds,
                    results,
                    Path(args.samples) if args.samples else None,
                )
            finally:
                server.terminate()
                await server.wait()
    finally:
        await stores.close()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CLIENT_CHILD:
        client_main()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000, help="idle WebSockets")
    parser.add_argument("--pollers", type=int, default=1_000, help="long-poll clients")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--rates", default="100,1000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--auth-check-seconds", type=float, default=0, help="0: the default")
    parser.add_argument("--data-dir", help="keep the data here (default: a temp dir)")
    parser.add_argument(
        "--samples", help="write each event's commit time and latency to files in this directory"
    )
    asyncio.run(main(parser.parse_args()))
