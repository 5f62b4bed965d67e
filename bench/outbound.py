"""Outbound delivery (issue 4): how fast worker-out empties the ``outgoing``
queue into a local sink, beside Postfix relaying the same number of messages
to the same sink, and the queue depth while the sink is down for a while.

Sink: Postfix's ``smtp-sink`` (C, discards, answers at once) on a free port of
127.0.0.1, for both. Message: about 4 KiB of text, one recipient.

1. Drain, for concurrency 1 and 20:
   - ours: N messages are sent through ``SendService`` (as ``POST
     /v1/messages`` does) with no worker running; then ``mailfleet serve
     --roles worker-out`` starts in its own process with ``[delivery]
     concurrency`` and ``connections_per_destination`` set to C, and the
     bench polls the queue depth;
   - Postfix: a loopback-only instance with ``relayhost`` = the sink and
     ``default_destination_concurrency_limit`` = C; N messages are injected
     with ``smtp-source`` while ``defer_transports = smtp`` holds them, then
     released (``postqueue -f``), and the bench polls its queue files.
   Rate = (N - 1) / (time from the first delivery to the last), for both.
2. Outage (ours only): a steady --rate msg/s for --outage-total seconds; the
   sink is stopped --outage-start seconds in and started again --outage
   seconds later; the queue depth is printed every 5 s. Retries follow the
   default schedule (first retry after 60 s), scaled by --time-scale.

    .venv/bin/python bench/outbound.py                    # N=2000, both parts
    .venv/bin/python bench/outbound.py -n 500 --skip-outage
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailfleet.config import Settings, load_settings
from mailfleet.delivery.send import Draft
from mailfleet.proto.addresses import Address
from mailfleet.runtime import Runtime
from mailfleet.storage.factory import create_stores

DOMAIN = "bench.test"
REMOTE = "sink.test"
BODY = ("The quick brown fox jumps over the lazy dog. " * 90)[:4000]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """``smtp-sink`` on a port; stop() and start() again for an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def settings_for(data_dir: Path, sink_port: int, concurrency: int, time_scale: float) -> Settings:
    return load_settings(
        None,
        {
            "data_dir": str(data_dir),
            "smtp": {"hostname": f"mx.{DOMAIN}", "routes": {REMOTE: f"127.0.0.1:{sink_port}"}},
            "delivery": {
                "concurrency": concurrency,
                "connections_per_destination": concurrency,
                "time_scale": time_scale,
            },
            "limits": {"send_per_minute": 10**9, "send_per_day": 10**9},
            "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1},
        },
    )


def write_config(path: Path, settings: Settings) -> Path:
    delivery = settings.delivery
    routes = "\n".join(f'"{k}" = "{v}"' for k, v in settings.smtp.routes.items())
    path.write_text(
        f"""[smtp]
hostname = "{settings.smtp.hostname}"

[smtp.routes]
{routes}

[delivery]
concurrency = {delivery.concurrency}
connections_per_destination = {delivery.connections_per_destination}
time_scale = {delivery.time_scale}
"""
    )
    return path


async def preload(settings: Settings, count: int) -> None:
    runtime = await Runtime.open(settings)
    try:
        await runtime.accounts.ensure_domain(DOMAIN, open_signup=False)
        email = f"sender@{DOMAIN}"
        account = await runtime.stores.directory.get_account_by_email(email)
        if account is None:
            await runtime.accounts.add_user(email, "bench password 1", "Sender")
            account = await runtime.stores.directory.get_account_by_email(email)
        assert account is not None
        for n in range(count):
            await runtime.sending.send(
                account,
                Draft(to=[Address(f"user{n % 50}@{REMOTE}")], subject=f"bench {n}", body=BODY),
            )
    finally:
        await runtime.close()


def start_worker(data_dir: Path, config: Path) -> subprocess.Popen[bytes]:
    http = free_port()
    log = open(data_dir / "worker-out.log", "ab")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailfleet",
            "serve",
            "--roles",
            "worker-out",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{http}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def drain_ours(n: int, concurrency: int) -> float:
    sink = Sink()
    sink.start()
    base = Path(tempfile.mkdtemp(prefix="mailfleet-outbound-", dir="/var/tmp"))
    try:
        settings = settings_for(base / "data", sink.port, concurrency, 1.0)
        await preload(settings, n)
        config = write_config(base / "bench.toml", settings)
        stores = create_stores(settings)
        await stores.queue.open()
        worker = start_worker(base / "data", config)
        try:
            first = last = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                depth = (await stores.queue.stats("outgoing")).depth
                now = time.monotonic()
                if depth < n and first is None:
                    first = now
                if depth == 0:
                    last = now
                    break
                await asyncio.sleep(0.02)
            if first is None or last is None:
                raise RuntimeError("worker-out did not drain the queue in time")
            return (n - 1) / max(last - first, 1e-9)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            await stores.queue.close()
    finally:
        sink.stop()
        shutil.rmtree(base, ignore_errors=True)


class PostfixRelay:
    def __init__(self, sink_port: int, concurrency: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="postfix-relay-", dir="/var/tmp"))
        self.base.chmod(0o755)
        self.port = free_port()
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        data = self.base / "data"
        for path in (self.conf, self.queue, data):
            path.mkdir()
        postfix = pwd.getpwnam("postfix")
        os.chown(data, postfix.pw_uid, postfix.pw_gid)
        master = Path("/usr/share/postfix/master.cf.dist")
        lines = [x for x in master.read_text().splitlines() if not x.startswith("smtp      inet")]
        lines.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {data}
maillog_file = {self.base}/postfix.log
maillog_file_prefixes = {self.base}
syslog_name = postfix-relay
myhostname = relay.{DOMAIN}
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
default_destination_concurrency_limit = {concurrency}
initial_destination_concurrency = {min(concurrency, 5)}
defer_transports = smtp
notify_classes =
"""
        )

    def run(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), *args], check=True, capture_output=True)

    def queued(self) -> int:
        return sum(
            1
            for d in ("incoming", "active", "deferred", "maildrop", "hold")
            if (self.queue / d).is_dir()
            for _, _, files in os.walk(self.queue / d)
            for _ in files
        )

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def drain_postfix(n: int, concurrency: int) -> float:
    sink = Sink()
    sink.start()
    relay = PostfixRelay(sink.port, concurrency)
    try:
        relay.run("start")
        wait_port(relay.port)
        subprocess.run(
            [
                "/usr/sbin/smtp-source",
                "-s",
                "20",
                "-m",
                str(n),
                "-l",
                "4000",
                "-f",
                f"sender@{DOMAIN}",
                "-t",
                f"user@{REMOTE}",
                f"127.0.0.1:{relay.port}",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 120
        while relay.queued() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["postconf", "-c", str(relay.conf), "-e", "defer_transports ="], check=True)
        relay.run("reload")
        subprocess.run(["postqueue", "-c", str(relay.conf), "-f"], check=True)
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            queued = relay.queued()
            now = time.monotonic()
            if queued < n and first is None:
                first = now
            if queued == 0:
                last = now
                break
            time.sleep(0.02)
        if first is None or last is None:
            raise RuntimeError("Postfix did not drain its queue in time")
        return (n - 1) / max(last - first, 1e-9)
    finally:
        relay.stop()
        sink.stop()


async def outage(rate: float, total: float, start: float, down: float, scale: float) -> None:
    sink = Sink()
    sink.start()
    base = Path(tempfile.mkdtemp(prefix="mailfleet-outage-", dir="/var/tmp"))
    settings = settings_for(base / "data", sink.port, 20, scale)
    await preload(settings, 0)
    config = write_config(base / "bench.toml", settings)
    worker = start_worker(base / "data", config)
    runtime = await Runtime.open(settings)
    account = await runtime.stores.directory.get_account_by_email(f"sender@{DOMAIN}")
    assert account is not None
    print(
        f"\noutage: {rate:.0f} msg/s for {total:.0f} s; sink down from {start:.0f} s "
        f"to {start + down:.0f} s; retry delays x{scale}"
    )
    print("   t (s)   sent   outgoing depth   sink")
    began = time.monotonic()
    sent = 0
    next_sample = 0.0
    state = "up"
    try:
        while True:
            elapsed = time.monotonic() - began
            if state == "up" and start <= elapsed < start + down:
                sink.stop()
                state = "down"
            elif state == "down" and elapsed >= start + down:
                sink.start()
                state = "up"
            if elapsed < total and sent < elapsed * rate:
                await runtime.sending.send(
                    account, Draft(to=[Address(f"user@{REMOTE}")], subject="load", body=BODY)
                )
                sent += 1
                continue
            if elapsed >= next_sample:
                depth = (await runtime.stores.queue.stats("outgoing")).depth
                print(f"{elapsed:8.0f} {sent:6d} {depth:16d}   {state}")
                next_sample += 5
                if elapsed >= total and depth == 0:
                    break
                if elapsed > total + 3600 * scale + 120:
                    print("queue did not drain")
                    break
            await asyncio.sleep(0.005)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await runtime.close()
        sink.stop()
        shutil.rmtree(base, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="messages per drain run")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-outage", action="store_true")
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--outage-total", type=float, default=120)
    parser.add_argument("--outage-start", type=float, default=10)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    if not args.skip_drain:
        print(f"\ndrain of {args.n} messages (4 KiB, one recipient) into smtp-sink")
        print("concurrency   ours msg/s   Postfix msg/s   ratio")
        for concurrency in (1, 20):
            ours = await drain_ours(args.n, concurrency)
            theirs = None if args.skip_postfix else drain_postfix(args.n, concurrency)
            ratio = f"{ours / theirs:5.2f}" if theirs else "    -"
            shown = f"{theirs:13.0f}" if theirs else "            -"
            print(f"{concurrency:11d} {ours:12.0f} {shown}   {ratio}")
    if not args.skip_outage:
        await outage(args.rate, args.outage_total, args.outage_start, args.outage, args.time_scale)


if __name__ == "__main__":
    asyncio.run(main())
