"""CPU seconds per 1,000 mails received over SMTP and stored, for the code
of this checkout or of another (``--src``), in the same run: what a change
to the DATA path or worker-in costs, measured where a shared two-core
machine's noise matters least (CPU time, not wall time).

``mailfleet serve`` (embedded default, every role) runs as its own process;
this process sends ``--mails`` mails of ``--size`` bytes over
``--connections`` SMTP connections, waits until the Inbox totals show every
one, and reads the CPU time of the server and its children (worker-in's
child process) from /proc. Runs alternate between the checkouts so that a
busy minute weighs on both.

    .venv/bin/python bench/ingest_cpu.py --src /work/wt-before/src --runs 3

The server's log goes where ``[logging]`` says (standard error, which is
/dev/null here, as JSON: rendered and written all the same); ``--log-file``
appends it to a file in the data directory instead
(``MAILFLEET_LOGGING__FILE``, which a checkout without structured logs
ignores), as a deployment would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
import httpx

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"
PASSWORD = "correct horse battery"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and every living descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


async def one_run(
    src: str | None, mails: int, connections: int, size: int, log_file: bool = False
) -> tuple[float, float]:
    data = Path(tempfile.mkdtemp(prefix="mailfleet-ingest-cpu-", dir="/var/tmp"))
    http, smtp = free_port(), free_port()
    config = data / "bench.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp}"\nsubmission_listen = "127.0.0.1:{free_port()}"\n'
        "max_connections_per_ip = 1000\nconnections_per_minute_per_ip = 100000000\n"
        "messages_per_minute_per_ip = 100000000\n"
        "[filters]\nsender_auth = false\n"
    )
    env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
    if log_file:
        env["MAILFLEET_LOGGING__FILE"] = str(data / "mailfleet.log")
    cli = [sys.executable, "-m", "mailfleet", "--config", str(config)]
    await asyncio.to_thread(
        subprocess.run,
        [*cli, "domain", "add", DOMAIN, "--open-signup"],
        env=env,
        check=True,
        capture_output=True,
    )
    server = await asyncio.create_subprocess_exec(*cli, "serve", env=env, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=30) as client:
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            email = f"bench@{DOMAIN}"
            await client.post("/v1/accounts", json={"email": email, "password": PASSWORD})
            login = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
            auth = {"Authorization": f"Bearer {login.json()['token']}"}
            body = ("x" * 76 + "\r\n") * (size // 78)
            began_cpu = tree_cpu_seconds(server.pid)
            began = time.monotonic()

            async def sender(numbers: range) -> None:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp, start_tls=False)
                await client.connect()
                for n in numbers:
                    message = (
                        f"From: someone@outside.example\r\nTo: {email}\r\n"
                        f"Subject: bench {n}\r\nMessage-ID: <b{n}.{began}@outside.example>\r\n"
                        f"\r\n{body}"
                    )
                    await client.sendmail("someone@outside.example", [email], message)
                await client.quit()

            senders = [sender(range(i, mails, connections)) for i in range(connections)]
            await asyncio.gather(*senders)
            accepted = time.monotonic() - began
            while True:
                folders = (await client.get("/v1/folders", headers=auth)).json()
                if next(f for f in folders if f["role"] == "inbox")["total"] >= mails:
                    break
                await asyncio.sleep(0.05)
            cpu = tree_cpu_seconds(server.pid) - began_cpu
            return cpu * 1000 / mails, mails / accepted
    finally:
        server.terminate()
        await server.wait()
        await asyncio.to_thread(shutil.rmtree, data, True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="another checkout's src/ to compare with this one's")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument(
        "--log-file", action="store_true", help="the server logs to a file, not /dev/null"
    )
    args = parser.parse_args()
    subjects = [("this checkout", None)] + ([(args.src, args.src)] if args.src else [])
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in subjects}
    for _ in range(args.runs):
        for name, src in subjects:
            figures[name].append(
                await one_run(src, args.mails, args.connections, args.size, args.log_file)
            )
    print(f"{args.mails} mails of {args.size} B over {args.connections} connections, "
          f"{args.runs} runs each (median):")  # fmt: skip
    medians = {}
    for name, runs in figures.items():
        cpu = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        medians[name] = cpu
        print(f"  {name}: {cpu:.2f} CPU s per 1,000 mails, accepted {rate:.0f}/s"
              f"  (runs: {', '.join(f'{r[0]:.2f}' for r in runs)})")  # fmt: skip
    if args.src:
        ratio = medians["this checkout"] / medians[args.src]
        print(f"  this checkout / {args.src}: {ratio:.3f} ({(ratio - 1) * 100:+.1f}% CPU)")


if __name__ == "__main__":
    asyncio.run(main())
