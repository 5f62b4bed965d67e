"""``deploy/local-fleet start|stop|resume|status``: the distributed profile as a whole
fleet on loopback, from Debian's servers and this installed project (issue
12, point 7).

Backends: a PostgreSQL directory and two shards, the second with a streaming
replica made by ``pg_basebackup`` (every cluster run as the postgres user:
``initdb`` refuses root), Redis, a three-node NATS JetStream cluster, moto's
S3 server (bucket created here, as a deployment would), and HAProxy in front
of 2 ``api``, 1 ``realtime``, 2 ``smtp-in``, 1 ``submission`` (HTTP and
WebSocket by path, SMTP in TCP mode with ``send-proxy``), beside 2
``worker-in`` and 1 ``worker-out``. Each mailfleet role is its own
``mailfleet serve --roles ROLE --config fleet.toml`` process with a data
directory of its own, so nothing is shared but what the URLs name.

Everything lives under one directory (``--dir``, ``$MAILFLEET_FLEET_DIR``,
default /var/tmp/mailfleet-fleet): ``fleet.json`` records every process, its
PID and port, so ``stop`` ends exactly what ``start`` began and ``status``
can say what is up; ``resume`` starts a stopped fleet again with its data
(``start`` begins a new one: it empties the directory). Ports are free ones
picked at start, or consecutive from ``--base-port``. The fleet's processes
inherit ``MAILFLEET_*`` from the environment of ``start`` (tests lower the
Argon2 cost and raise the rate limits that way).

Python rather than bash: it waits for readiness over each protocol (an SQL
query, JetStream's meta leader, S3's bucket, HTTP ``/readyz``), writes and
reads the state as JSON, and the acceptance tests drive the same code
(``Fleet``) to stop and restart one backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailfleet import loopback_s3

DEFAULT_DIR = Path("/var/tmp/mailfleet-fleet")
# The checkout this runs from (deploy/ holds the Prometheus rules).
ROOT = Path(__file__).resolve().parent.parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DOMAIN = "demo.mailfleet.test"
BUCKET = "mailfleet"
S3_REGION = "us-east-1"
S3_KEY = "fleet"
S3_SECRET = "fleet-secret"
DATABASE = "mailfleet"
# Processes per mailfleet role, as issue 12 lists them.
ROLE_COUNTS = {
    "api": 2,
    "realtime": 1,
    "smtp-in": 2,
    "submission": 1,
    "worker-in": 2,
    "worker-out": 1,
}
# Backends by the name ``stop_backend``/``start_backend`` and ``status`` use.
BACKENDS = ("postgres", "redis", "nats", "s3", "haproxy")
PG_CLUSTERS = ("directory", "shard1", "shard2", "shard2-replica")
# The application_name of shard2's standby, which its primary waits for.
STANDBY_NAME = "shard2_replica"
NATS_NODES = ("n1", "n2", "n3")
# A put waits this long for JetStream before smtp-in answers 451 and the API
# 503: longer than an election in the field notes (~3 s), far shorter than the
# queue's default, so a cluster that is down costs an SMTP client 6 s.
PUBLISH_PATIENCE = 6


class FleetError(Exception):
    """The fleet could not be started or stopped; the message says why."""


@dataclass
class Proc:
    """One process of the fleet: a backend server or a mailfleet role."""

    name: str
    kind: str  # a BACKENDS name, or "mailfleet"
    port: int = 0
    pid: int = 0
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FleetState:
    root: str
    ports: dict[str, int]
    procs: list[Proc]
    demo: list[tuple[str, str]] = field(default_factory=list)

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)


def fleet_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("MAILFLEET_FLEET_DIR") or DEFAULT_DIR)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_names() -> list[str]:
    names = ["http", "smtp", "submission", "haproxy-stats", "redis", "s3"]
    names += [f"pg-{c}" for c in PG_CLUSTERS]
    names += [f"nats-{n}" for n in NATS_NODES] + [f"nats-route-{n}" for n in NATS_NODES]
    for role, count in ROLE_COUNTS.items():
        names += [f"{role}-{i}" for i in range(1, count + 1)]
    # Each role process's operations port (/metrics, /healthz, /readyz), and
    # the Prometheus that ``start --prometheus`` runs to scrape them.
    names += [f"metrics-{role}-{i}" for role, count in ROLE_COUNTS.items()
              for i in range(1, count + 1)]  # fmt: skip
    names.append("prometheus")
    return names


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not reaped yet) is not up.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _tcp_up(port: int, timeout: float = 0.3) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _s3_command(port: int) -> list[str]:
    """moto's S3 API served with keep-alive (``mailfleet/loopback_s3.py``)."""
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise FleetError("moto is missing: pip install 'moto[server]' (scripts/bootstrap)") from exc
    return loopback_s3.command(port)


def _tail(path: str, lines: int = 30) -> str:
    """The last lines of a log, for an error that must say why (the logs of a
    failed start are often removed with its directory)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def _wait(what: str, check: Any, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.pid and not _alive(proc.pid):
            raise FleetError(
                f"{what}: process {proc.pid} exited; the end of {proc.log}:\n{_tail(proc.log)}"
            )
        if time.monotonic() > deadline:
            raise FleetError(f"{what}: not ready within {timeout:.0f} s")
        time.sleep(0.1)


# The Popen objects of the processes this Python started, kept until they are
# stopped and waited for (a discarded one warns that its child still runs).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(proc: Proc, command: Sequence[str], env: dict[str, str] | None = None) -> None:
    with open(proc.log, "ab") as log:
        child = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own session: the fleet outlives the `start` command, and a
            # Ctrl-C in the caller's terminal does not reach it.
            start_new_session=True,
        )
    proc.pid = child.pid
    _children[child.pid] = child


def _as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FleetError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _program(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise FleetError(f"{name} is missing: apt-get install {package}")
    return found


def _mailfleet_program() -> str:
    beside = Path(sys.executable).parent / "mailfleet"
    return str(beside) if beside.exists() else _program("mailfleet", "this project")


class Fleet:
    """A fleet under ``root``: ``start`` it, ``stop`` it, ask its ``status``,
    and stop or start one backend of it (the backend-down tests)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.state_file = root / "fleet.json"
        # MAILFLEET_* settings for the fleet's mailfleet processes, over the
        # environment this process inherited.
        self.env = dict(env or {})

    # -- state -----------------------------------------------------------------

    def load(self) -> FleetState | None:
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        procs = [Proc(**p) for p in raw["procs"]]
        demo = [(e, p) for e, p in raw.get("demo", [])]
        return FleetState(raw["root"], raw["ports"], procs, demo)

    def save(self, state: FleetState) -> None:
        data = {
            "root": state.root,
            "ports": state.ports,
            "procs": [asdict(p) for p in state.procs],
            "demo": state.demo,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_file)

    def running(self) -> bool:
        state = self.load()
        return state is not None and any(_alive(p.pid) for p in state.procs)

    # -- start -----------------------------------------------------------------

    def start(self, base_port: int | None = None, *, prometheus: bool = False) -> FleetState:
        if self.running():
            raise FleetError(f"a fleet is already running in {self.root}: stop it first")
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.root.chmod(0o755)  # the postgres user walks through it
        (self.root / "logs").mkdir()
        names = _port_names()
        numbers = (
            list(range(base_port, base_port + len(names))) if base_port else _free_ports(len(names))
        )
        state = FleetState(str(self.root), dict(zip(names, numbers, strict=True)), [])
        self.save(state)
        try:
            self._start_postgres(state)
            self._start_redis(state)
            self._start_nats(state)
            self._start_s3(state)
            self._write_config(state)
            self._migrate(state)
            self._start_roles(state)
            self._start_haproxy(state)
            self._wait_http(state)
            if prometheus:
                self._start_prometheus(state)
            state.demo = self._create_demo(state)
            self.save(state)
        except BaseException:
            self.stop()
            raise
        return state

    def metrics_targets(self, state: FleetState) -> list[str]:
        """HOST:PORT of every role process's operations port."""
        return [
            f"127.0.0.1:{state.ports[f'metrics-{p.name}']}"
            for p in state.procs
            if p.kind == "mailfleet" and f"metrics-{p.name}" in state.ports
        ]

    def _start_prometheus(self, state: FleetState) -> None:
        """Debian's Prometheus scraping every role process every 2 s, with the
        alert rules of ``deploy/prometheus/alerts.yml`` when this is a
        checkout that has them."""
        rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
        targets = ", ".join(f'"{t}"' for t in self.metrics_targets(state))
        config = self.root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
            + (f'rule_files: ["{rules}"]\n' if rules.exists() else "")
            + "scrape_configs:\n  - job_name: mailfleet\n"
            + f"    static_configs:\n      - targets: [{targets}]\n"
        )
        proc = Proc("prometheus", "prometheus", state.ports["prometheus"],
                    log=self._log("prometheus"))  # fmt: skip
        state.procs.append(proc)
        self._spawn_prometheus(state, proc)

    def _spawn_prometheus(self, state: FleetState, proc: Proc) -> None:
        _spawn(proc, [
            _program("prometheus", "prometheus"),
            f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{proc.port}", "--log.level=warn",
        ])  # fmt: skip
        self.save(state)
        _wait("prometheus", lambda: _http_ok(f"http://127.0.0.1:{proc.port}/-/ready"), 30, proc)

    def resume(self) -> FleetState:
        """Starts again, on the same ports, a fleet ``stop`` stopped, with its
        data: the PostgreSQL clusters (the replica catches up) and the NATS
        stores as they were. Redis and moto start empty (moto keeps no
        objects across a restart: the bucket is made again, blobs written
        before are gone)."""
        state = self._require()
        if self.running():
            raise FleetError(f"the fleet in {self.root} is running")
        busy = [f"{name} ({port})" for name, port in state.ports.items() if _tcp_up(port)]
        if busy:
            raise FleetError(
                f"ports of the fleet in {self.root} are taken now: {', '.join(busy)};"
                " start a new fleet instead"
            )
        try:
            for kind in ("postgres", "redis", "nats", "s3"):
                self._start_backend(state, kind)
            for proc in state.procs:
                if proc.kind == "mailfleet":
                    self._spawn_role(state, proc)
            self.save(state)
            self._wait_roles(state)
            haproxy = state.proc("haproxy")
            _spawn(haproxy, [_program("haproxy", "haproxy"), "-f", str(self.root / "haproxy.cfg"),
                             "-db"])  # fmt: skip
            self.save(state)
            _wait("haproxy", lambda: _tcp_up(state.ports["smtp"]), 10, haproxy)
            self._wait_http(state)
            for proc in state.procs:
                if proc.kind == "prometheus":
                    self._spawn_prometheus(state, proc)
        except BaseException:
            self.stop()
            raise
        return state

    def _log(self, name: str) -> str:
        return str(self.root / "logs" / f"{name}.log")

    def _pg_dir(self, cluster: str) -> Path:
        return self.root / "pg" / cluster

    def _start_postgres(self, state: FleetState) -> None:
        pg_root = self.root / "pg"
        pg_root.mkdir()
        shutil.chown(pg_root, "postgres", "postgres")
        for cluster in ("directory", "shard1", "shard2"):
            data = self._pg_dir(cluster)
            _as_postgres(
                str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E",
                "UTF8", "--no-sync",
            )  # fmt: skip
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# mailfleet local fleet\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{pg_root}'\n"
                    "wal_level = replica\nmax_wal_senders = 5\nmax_connections = 200\n"
                    "fsync = on\n"
                )
                if cluster == "shard2":
                    # A commit waits for the standby named so to have it on
                    # disk: what is acknowledged survives the primary's loss
                    # (failover). Copied to the standby by pg_basebackup, so
                    # either can be the primary of the other.
                    conf.write(f"synchronous_standby_names = '{STANDBY_NAME}'\n")
        # initdb's pg_hba.conf already trusts replication from 127.0.0.1/32.
        for cluster in ("directory", "shard1", "shard2"):
            self._pg_start(state, cluster)
        self._start_standby(state, "shard2-replica", of="shard2")
        for cluster in ("directory", "shard1", "shard2"):
            self.sql(state, cluster, f"CREATE DATABASE {DATABASE}", database="postgres")

    def _start_standby(self, state: FleetState, cluster: str, of: str) -> None:
        """``cluster`` made afresh as the streaming standby of ``of``
        (``pg_basebackup``), and started."""
        data = self._pg_dir(cluster)
        if data.exists():
            shutil.rmtree(data)
        _as_postgres(
            str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(state.ports[f"pg-{of}"]),
            "-U", "postgres", "-D", str(data), "-R", "-X", "stream",
        )  # fmt: skip
        with (data / "postgresql.auto.conf").open("a") as conf:
            # The name the primary's synchronous_standby_names waits for.
            conf.write("primary_conninfo = '{} application_name={}'\n".format(
                f"host=127.0.0.1 port={state.ports[f'pg-{of}']} user=postgres", STANDBY_NAME
            ))  # fmt: skip
        self._pg_start(state, cluster)

    def kill_postgres(self, cluster: str) -> None:
        """SIGKILL a cluster's postmaster: a crash of its machine, as far as
        clients and its standby can tell (its backends exit with it)."""
        state = self._require()
        proc = state.proc(f"pg-{cluster}")
        if _alive(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.pid = 0
        self.save(state)

    def promote(self, cluster: str) -> None:
        """Makes a standby the primary (``pg_ctl promote``): how a failover is
        triggered here, by the operator (or a test); nothing promotes on its
        own. Clients find it through their multi-host URLs."""
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self._pg_dir(cluster)), "-w", "promote")
        # Its standby was the primary that is gone: a commit waiting for it
        # would wait for ever. Until ``rebuild_standby`` gives it one, the
        # shard commits on one server (as Patroni does without
        # synchronous_mode_strict): available, one failure from loss.
        self._wait_for_standby(self._require(), cluster, "")

    def _wait_for_standby(self, state: FleetState, cluster: str, name: str) -> None:
        """Makes ``cluster``'s commits wait for the standby ``name`` ('' for
        none) to have them on disk."""
        self.sql(state, cluster, f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
        self.sql(state, cluster, "SELECT pg_reload_conf()")

    def rebuild_standby(self, cluster: str, of: str) -> None:
        """After a failover: the old primary ``cluster``, gone or stopped,
        made again as the standby of the new primary ``of``."""
        state = self._require()
        proc = state.proc(f"pg-{cluster}")
        if _alive(proc.pid):
            self._stop_proc(proc)
        self._start_standby(state, cluster, of=of)
        self._wait_for_standby(state, of, STANDBY_NAME)

    def switch_over(self, primary: str, standby: str) -> None:
        """A planned change of primary, nothing lost: ``primary`` stopped
        cleanly (its last WAL goes to the standby first), ``standby``
        promoted, ``primary`` made its standby."""
        state = self._require()
        self._stop_proc(state.proc(f"pg-{primary}"))
        self.promote(standby)
        self.rebuild_standby(primary, of=standby)

    def _pg_start(self, state: FleetState, cluster: str) -> None:
        name = f"pg-{cluster}"
        log = self._log(name)
        Path(log).touch()
        shutil.chown(log, "postgres", "postgres")
        port = state.ports[name]
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self._pg_dir(cluster)), "-l", log, "-w", "-t",
            "30", "-o", f"-p {port}", "start",
        )  # fmt: skip
        pid = int((self._pg_dir(cluster) / "postmaster.pid").read_text().split()[0])
        existing = [p for p in state.procs if p.name == name]
        if existing:
            existing[0].pid = pid
        else:
            state.procs.append(Proc(name, "postgres", port, pid, log, {"cluster": cluster}))
        self.save(state)

    def sql(self, state: FleetState, cluster: str, sql: str, database: str = DATABASE) -> str:
        """One statement on one PostgreSQL cluster of the fleet, as psql prints it."""
        port = state.ports[f"pg-{cluster}"]
        result = _as_postgres(
            str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d",
            database, "-XAtc", sql,
        )  # fmt: skip
        return result.stdout.strip()

    def _start_redis(self, state: FleetState) -> None:
        proc = Proc("redis", "redis", state.ports["redis"], log=self._log("redis"))
        _spawn(proc, [
            _program("redis-server", "redis-server"), "--port", str(proc.port), "--bind",
            "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.root),
        ])  # fmt: skip
        state.procs.append(proc)
        self.save(state)
        _wait("redis", lambda: _tcp_up(proc.port), 10, proc)

    def _nats_command(self, state: FleetState, node: str) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{state.ports[f'nats-route-{n}']}" for n in NATS_NODES)
        store = self.root / "nats" / node
        store.mkdir(parents=True, exist_ok=True)
        return [
            _program("nats-server", "nats-server"), "-js", "-a", "127.0.0.1", "-p",
            str(state.ports[f"nats-{node}"]), "-sd", str(store), "--cluster_name",
            "mailfleet", "--cluster", f"nats://127.0.0.1:{state.ports[f'nats-route-{node}']}",
            "--routes", routes, "-n", node,
        ]  # fmt: skip

    def _start_nats(self, state: FleetState) -> None:
        for node in NATS_NODES:
            proc = Proc(f"nats-{node}", "nats", state.ports[f"nats-{node}"])
            proc.log = self._log(proc.name)
            _spawn(proc, self._nats_command(state, node))
            state.procs.append(proc)
        self.save(state)
        self._wait_jetstream(state)

    def _wait_jetstream(self, state: FleetState, streams: bool = False) -> None:
        import nats  # the fleet tool alone needs it here

        urls = [f"nats://127.0.0.1:{state.ports[f'nats-{n}']}" for n in NATS_NODES]

        async def ready() -> bool:
            async def quiet(_: Exception) -> None:
                pass  # refused while the nodes start: expected, asked again

            try:
                nc = await nats.connect(
                    servers=urls,
                    connect_timeout=1,
                    max_reconnect_attempts=1,
                    error_cb=quiet,
                    allow_reconnect=False,
                )
            except (OSError, nats.errors.Error):
                return False
            try:
                reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                if "error" in json.loads(reply.data):
                    return False
                if not streams:
                    return True
                # After a restart of the whole cluster every replicated stream
                # elects its own leader, seconds after the meta leader: until
                # then its publishes time out.
                reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=1)
                for name in json.loads(reply.data).get("streams") or []:
                    info = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=1)
                    if not json.loads(info.data).get("cluster", {}).get("leader"):
                        return False
                return True
            except nats.errors.Error:
                return False
            finally:
                await nc.close()

        _wait("NATS JetStream meta leader", lambda: asyncio.run(ready()), 30)

    def _start_s3(self, state: FleetState) -> None:
        proc = Proc("s3", "s3", state.ports["s3"], log=self._log("s3"))
        _spawn(proc, _s3_command(proc.port))
        state.procs.append(proc)
        self.save(state)
        _wait("moto S3 server", lambda: _tcp_up(proc.port), 20, proc)
        asyncio.run(self._create_bucket(proc.port))

    async def _create_bucket(self, port: int) -> None:
        """The bucket and the lifecycle rules decision 0015 asks of whoever
        provisions it (moto stores them and does not act on them)."""
        from aiobotocore.session import get_session

        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        ) as s3:
            await s3.create_bucket(Bucket=BUCKET)
            await s3.put_bucket_lifecycle_configuration(
                Bucket=BUCKET,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "abort-incomplete-uploads",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        },
                        {
                            "ID": "expire-staging",
                            "Status": "Enabled",
                            "Filter": {"Prefix": "blobs/tmp/"},
                            "Expiration": {"Days": 1},
                        },
                    ]
                },
            )

    @property
    def config_path(self) -> Path:
        return self.root / "fleet.toml"

    def _write_config(self, state: FleetState) -> None:
        from mailfleet.smtp.tls import self_signed

        ports = state.ports
        pg = "postgresql://postgres@127.0.0.1:{}/" + DATABASE
        pair = (
            f"postgresql://postgres@/{DATABASE}?host=127.0.0.1:{{}}&host=127.0.0.1:{{}}"
            "&target_session_attrs={}"
        )
        nats_servers = ",".join(f"127.0.0.1:{ports[f'nats-{n}']}" for n in NATS_NODES)
        # One certificate for both smtp-in processes: a client behind the
        # balancer sees the same one whichever it reaches.
        cert, key = self_signed(self.root / "tls", "mx.localhost")
        s3 = (
            f"s3://{BUCKET}/blobs?endpoint=http://127.0.0.1:{ports['s3']}&region={S3_REGION}"
            f"&access_key_id={S3_KEY}&secret_access_key={S3_SECRET}"
        )
        self.config_path.write_text(
            f"""# Written by deploy/local-fleet start; every process of the fleet reads it.
[storage]
metadata_url = "{pg.format(ports["pg-directory"])}"
blob_url = "{s3}"
queue_url = "nats://{nats_servers}/?prefix=fleet&replicas=3&publish_patience={PUBLISH_PATIENCE}"
cache_url = "redis://127.0.0.1:{ports["redis"]}/0?prefix=fleet"
events_url = "redis://127.0.0.1:{ports["redis"]}/0?prefix=fleet"
# `deploy/local-fleet start` ran `mailfleet db upgrade` once.
migrate_on_start = false

[[storage.metadata_shards]]
name = "shard1"
url = "{pg.format(ports["pg-shard1"])}"

[[storage.metadata_shards]]
name = "shard2"
# Both servers in each URL: after a failover (`promote`) the one that is
# primary now takes the writes, the other the reads.
url = "{pair.format(ports["pg-shard2"], ports["pg-shard2-replica"], "read-write")}"
replica_url = "{pair.format(ports["pg-shard2-replica"], ports["pg-shard2"], "prefer-standby")}"

[http]
trusted_origins = ["http://127.0.0.1:{ports["http"]}", "http://localhost:{ports["http"]}"]

[smtp]
hostname = "mx.localhost"
tls_cert = "{cert}"
tls_key = "{key}"
# HAProxy sends a PROXY header: per-IP limits and Received lines see the client.
proxy_protocol = true
proxy_trusted = ["127.0.0.1/32"]

[logging]
# Every process's standard error goes to logs/<name>.log: one JSON object a
# line there, and `mailfleet --config fleet.toml trace ID` reads them all.
format = "json"
trace_logs = ["{self.root / "logs" / "*.log"}"]

[[domains]]
name = "{DOMAIN}"
open_signup = true
"""
        )

    def _mailfleet_env(self, data_dir: Path) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["MAILFLEET_DATA_DIR"] = str(data_dir)
        env["PYTHONUNBUFFERED"] = "1"  # its start line reaches the log at once
        env.pop("MAILFLEET_CONFIG", None)
        return env

    def _migrate(self, state: FleetState) -> None:
        # The schema once; then one process opens the queues and so creates
        # their replicated streams: nine processes creating them at once on
        # a cluster that has just elected its meta leader timed out
        # (JetStream answered none within 5 s) and the role exited.
        for command in (["db", "upgrade"], ["queue", "list", "incoming"]):
            result = subprocess.run(
                [_mailfleet_program(), "--config", str(self.config_path), *command],
                capture_output=True,
                text=True,
                env=self._mailfleet_env(self.root / "run" / "migrate"),
                check=False,
            )
            if result.returncode != 0:
                raise FleetError(f"mailfleet {' '.join(command)}: {result.stderr.strip()}")

    def _role_command(self, state: FleetState, proc: Proc) -> list[str]:
        role = proc.extra["role"]
        command = [_mailfleet_program(), "serve", "--roles", role]
        command += ["--config", str(self.config_path)]
        listen = f"127.0.0.1:{proc.port}"
        # Each role listens on its own port; the flags of the others stay on
        # port 0 so no two processes fight over a default.
        command += ["--http", listen if role in ("api", "realtime") else "127.0.0.1:0"]
        command += ["--smtp", listen if role == "smtp-in" else "127.0.0.1:0"]
        command += ["--submission", listen if role == "submission" else "127.0.0.1:0"]
        return command

    def _spawn_role(self, state: FleetState, proc: Proc) -> None:
        data_dir = self.root / "run" / proc.name
        data_dir.mkdir(parents=True, exist_ok=True)
        # A worker is up once it says so on its log, after what is there.
        log = Path(proc.log)
        proc.extra["log_offset"] = log.stat().st_size if log.exists() else 0
        env = self._mailfleet_env(data_dir)
        operations = state.ports.get(f"metrics-{proc.name}")
        if operations:
            env["MAILFLEET_METRICS__LISTEN"] = f"127.0.0.1:{operations}"
        _spawn(proc, self._role_command(state, proc), env)

    def _start_roles(self, state: FleetState) -> None:
        for role, count in ROLE_COUNTS.items():
            for i in range(1, count + 1):
                name = f"{role}-{i}"
                proc = Proc(name, "mailfleet", state.ports[name], log=self._log(name))
                proc.extra["role"] = role
                self._spawn_role(state, proc)
                state.procs.append(proc)
        self.save(state)
        self._wait_roles(state)

    def _wait_roles(self, state: FleetState) -> None:
        for proc in state.procs:
            if proc.kind == "mailfleet":
                _wait(proc.name, lambda p=proc: self._role_up(p), 60, proc)

    def _role_up(self, proc: Proc) -> bool:
        if not _alive(proc.pid):
            return False
        if proc.extra["role"] in ("worker-in", "worker-out"):
            # No port: up once it has said so on its log.
            with open(proc.log, "rb") as log:
                log.seek(proc.extra.get("log_offset", 0))
                return b"mailfleet: " in log.read()
        return _tcp_up(proc.port)

    def _haproxy_config(self, state: FleetState) -> str:
        ports = state.ports

        def servers(role: str, options: str) -> str:
            return "\n".join(
                f"    server {role}-{i} 127.0.0.1:{ports[f'{role}-{i}']} {options}"
                for i in range(1, ROLE_COUNTS[role] + 1)
            )

        return f"""global
    maxconn 4000
defaults
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    # A WebSocket lives as long as its client wants (heartbeats every 20 s).
    timeout tunnel 1h
    default-server inter 1s fall 2 rise 1

frontend http
    mode http
    bind 127.0.0.1:{ports["http"]}
    # The client's address for the API's per-client limits (login
    # throttling): uvicorn believes X-Forwarded-For from 127.0.0.1, us.
    option forwardfor
    # The realtime role holds the sockets and long polls (architecture.md).
    acl realtime path_beg /v1/events
    use_backend realtime if realtime
    default_backend api

backend api
    mode http
    balance roundrobin
    # Liveness, not readiness: with a backend down the processes answer the
    # API's own 503 JSON, rather than HAProxy a page of its own.
    option httpchk GET /healthz
{servers("api", "check")}

backend realtime
    mode http
    option httpchk GET /healthz
{servers("realtime", "check")}

frontend smtp
    mode tcp
    bind 127.0.0.1:{ports["smtp"]}
    default_backend smtp_in

backend smtp_in
    mode tcp
    balance roundrobin
    # A plain TCP check: no PROXY header, so smtp-in hangs up on it at once.
{servers("smtp-in", "check send-proxy")}

frontend submission
    mode tcp
    bind 127.0.0.1:{ports["submission"]}
    default_backend submission

backend submission
    mode tcp
{servers("submission", "check send-proxy")}

frontend stats
    mode http
    bind 127.0.0.1:{ports["haproxy-stats"]}
    stats enable
    stats uri /
"""

    def _start_haproxy(self, state: FleetState) -> None:
        config = self.root / "haproxy.cfg"
        config.write_text(self._haproxy_config(state))
        proc = Proc("haproxy", "haproxy", state.ports["http"], log=self._log("haproxy"))
        _spawn(proc, [_program("haproxy", "haproxy"), "-f", str(config), "-db"])
        state.procs.append(proc)
        self.save(state)
        _wait("haproxy", lambda: _tcp_up(state.ports["smtp"]), 10, proc)

    def _wait_http(self, state: FleetState) -> None:
        url = f"http://127.0.0.1:{state.ports['http']}/readyz"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except (OSError, urllib.error.URLError):
                return False

        _wait("the API through HAProxy", ready, 30)

    def _create_demo(self, state: FleetState) -> list[tuple[str, str]]:
        base = f"http://127.0.0.1:{state.ports['http']}"
        made = []
        for local in ("alice", "bob"):
            email, password = f"{local}@{DOMAIN}", secrets.token_urlsafe(9)
            body = json.dumps(
                {"email": email, "password": password, "name": local.title() + " Demo"}
            ).encode()
            request = urllib.request.Request(
                f"{base}/v1/accounts", body, {"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status != 201:
                    raise FleetError(f"demo sign-up answered {response.status}")
            made.append((email, password))
        return made

    # -- one backend at a time ---------------------------------------------------

    def stop_backend(self, kind: str) -> None:
        """Stops every process of one backend (``postgres``, ``nats``, ``s3``,
        ``redis``, ``haproxy``), as an outage would; ``start_backend`` brings
        it back with its data (moto keeps none: its bucket is made again)."""
        state = self._require()
        for proc in state.procs:
            if proc.kind == kind:
                self._stop_proc(proc)
        self.save(state)

    def start_backend(self, kind: str) -> None:
        state = self._require()
        self._start_backend(state, kind)

    def _start_backend(self, state: FleetState, kind: str) -> None:
        procs = [p for p in state.procs if p.kind == kind]
        if kind == "postgres":
            for proc in procs:
                self._pg_start(state, proc.extra["cluster"])
        elif kind == "nats":
            for proc in procs:
                _spawn(proc, self._nats_command(state, proc.name.removeprefix("nats-")))
            self.save(state)
            self._wait_jetstream(state, streams=True)
        elif kind == "s3":
            (proc,) = procs
            _spawn(proc, _s3_command(proc.port))
            self.save(state)
            _wait("moto S3 server", lambda: _tcp_up(proc.port), 20, proc)
            asyncio.run(self._create_bucket(proc.port))
        elif kind == "redis":
            self._start_redis_again(state, procs[0])
        else:
            raise FleetError(f"cannot restart {kind!r} alone")
        self.save(state)

    def _start_redis_again(self, state: FleetState, proc: Proc) -> None:
        _spawn(proc, [
            _program("redis-server", "redis-server"), "--port", str(proc.port), "--bind",
            "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.root),
        ])  # fmt: skip
        _wait("redis", lambda: _tcp_up(proc.port), 10, proc)

    # -- stop and status ---------------------------------------------------------

    def stop_role_process(self, name: str) -> None:
        """Stops one role process (``smtp-in-2``): HAProxy's health check
        takes it out of its backend within two seconds."""
        state = self._require()
        proc = state.proc(name)
        if proc.kind != "mailfleet":
            raise FleetError(f"{name} is not a role process (stop_backend stops backends)")
        self._stop_proc(proc)
        self.save(state)

    def start_role_process(self, name: str) -> None:
        """Starts again a role process stopped by ``stop_role_process``."""
        state = self._require()
        proc = state.proc(name)
        if proc.kind != "mailfleet":
            raise FleetError(f"{name} is not a role process (start_backend starts backends)")
        if _alive(proc.pid):
            return
        self._spawn_role(state, proc)
        self.save(state)
        _wait(proc.name, lambda: self._role_up(proc), 60, proc)

    def kill_process(self, name: str) -> None:
        """SIGKILL one process of the fleet (``worker-in-2``, ``nats-n2``,
        ``redis``): a crash, no clean shutdown. ``restart_process`` starts it
        again."""
        state = self._require()
        proc = state.proc(name)
        if proc.kind == "postgres":
            raise FleetError("a PostgreSQL cluster is stopped with stop_backend")
        if _alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(proc.pid) and time.monotonic() < deadline:
                self._reap(proc.pid)
                time.sleep(0.02)
        self._reap(proc.pid)
        proc.pid = 0
        self.save(state)

    def restart_process(self, name: str, wait: bool = True) -> None:
        """Starts again, with its data, one process ``kill_process`` killed;
        with ``wait``, returns once it serves again."""
        state = self._require()
        proc = state.proc(name)
        if _alive(proc.pid):
            return
        if proc.kind == "mailfleet":
            self._spawn_role(state, proc)
            ready: Any = lambda: self._role_up(proc)  # noqa: E731
        elif proc.kind == "nats":
            _spawn(proc, self._nats_command(state, name.removeprefix("nats-")))
            ready = lambda: _tcp_up(proc.port)  # noqa: E731
        elif proc.kind == "redis":
            self._start_redis_again(state, proc)
            ready = lambda: _tcp_up(proc.port)  # noqa: E731
        else:
            raise FleetError(f"cannot restart {name} alone (start_backend starts backends)")
        self.save(state)
        if wait:
            _wait(proc.name, ready, 60, proc)

    def _require(self) -> FleetState:
        state = self.load()
        if state is None:
            raise FleetError(f"no fleet in {self.root}")
        return state

    def _stop_proc(self, proc: Proc) -> None:
        if proc.kind == "postgres":
            data = self._pg_dir(proc.extra["cluster"])
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(FleetError):
                    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                 "stop")  # fmt: skip
        if _alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(proc.pid) and time.monotonic() < deadline:
                self._reap(proc.pid)
                time.sleep(0.05)
            if _alive(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        self._reap(proc.pid)
        proc.pid = 0

    @staticmethod
    def _reap(pid: int) -> None:
        # Processes started by this very Python (the tests) are its children.
        child = _children.get(pid)
        if child is not None:
            if child.poll() is not None:
                del _children[pid]
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def stop(self) -> list[str]:
        """Stops every process ``start`` recorded, front to back: the
        balancer, then the roles, then the backends they use."""
        state = self.load()
        if state is None:
            return []
        order = ["prometheus", "haproxy", "mailfleet", "s3", "nats", "redis", "postgres"]
        stopped = []
        for kind in order:
            for proc in reversed([p for p in state.procs if p.kind == kind]):
                if proc.pid or proc.kind == "postgres":
                    self._stop_proc(proc)
                    stopped.append(proc.name)
            self.save(state)
        return stopped

    def status(self) -> list[tuple[str, str, int, int, bool]]:
        """(name, kind, pid, port, up) for every process of the fleet."""
        state = self._require()
        rows = []
        for proc in state.procs:
            up = _alive(proc.pid)
            if up and proc.kind == "postgres":
                up = self._pg_ready(proc)
            elif (
                up
                and proc.port
                and not (proc.kind == "mailfleet" and proc.extra["role"].startswith("worker"))
            ):
                up = _tcp_up(proc.port)
            rows.append((proc.name, proc.kind, proc.pid, proc.port, up))
        return rows

    def _pg_ready(self, proc: Proc) -> bool:
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(proc.port), "-q"],
            check=False,
        )
        return result.returncode == 0


def describe(state: FleetState) -> str:
    ports = state.ports
    http = f"http://127.0.0.1:{ports['http']}"
    lines = [
        f"mailfleet local fleet in {state.root} ({len(state.procs)} processes)",
        f"  webmail and HTTP API  {http}/   (WebSocket {http.replace('http', 'ws')}/v1/events/ws)",
        f"  SMTP (MX)             127.0.0.1:{ports['smtp']}   (HAProxy, PROXY protocol)",
        f"  SMTP submission       127.0.0.1:{ports['submission']}",
        f"  HAProxy stats         http://127.0.0.1:{ports['haproxy-stats']}/",
        "  metrics               each role process's /metrics on its metrics-* port (fleet.json)",
        f"  config                {Path(state.root) / 'fleet.toml'}",
    ]
    if any(p.kind == "prometheus" for p in state.procs):
        lines.append(f"  Prometheus            http://127.0.0.1:{ports['prometheus']}/")
    for email, password in state.demo:
        lines.append(f"  demo login: {email}  password: {password}")
    if state.demo:
        email, password = state.demo[0]
        lines.append(
            f"  try: curl -s -X POST {http}/v1/sessions -H 'content-type: application/json' "
            f'-d \'{{"email": "{email}", "password": "{password}"}}\''
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-fleet", description="a whole mailfleet fleet on loopback"
    )
    parser.add_argument(
        "--dir", help=f"state directory (default $MAILFLEET_FLEET_DIR or {DEFAULT_DIR})"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start every backend, role and the balancer")
    start.add_argument(
        "--base-port", type=int, help="consecutive ports from here (default: free ports)"
    )
    start.add_argument(
        "--prometheus",
        action="store_true",
        help="also Prometheus (apt-get install prometheus) scraping every role process,"
        " with deploy/prometheus/alerts.yml",
    )
    sub.add_parser("stop", help="stop everything start started")
    sub.add_parser("resume", help="start a stopped fleet again, with its data, on its ports")
    sub.add_parser("status", help="each process and backend, up or down")
    args = parser.parse_args(argv)
    fleet = Fleet(fleet_dir(args.dir))
    try:
        if args.action == "start":
            print(describe(fleet.start(args.base_port, prometheus=args.prometheus)))
        elif args.action == "resume":
            print(describe(fleet.resume()))
        elif args.action == "stop":
            stopped = fleet.stop()
            print(f"stopped {len(stopped)} processes" if stopped else "nothing to stop")
        else:
            rows = fleet.status()
            for name, kind, pid, port, up in rows:
                where = f":{port}" if port else ""
                print(f"{'up' if up else 'DOWN':5} {name:16} {kind:9} pid {pid or '-':<8} {where}")
            return 0 if all(row[4] for row in rows) else 3
    except FleetError as exc:
        print(f"local-fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
