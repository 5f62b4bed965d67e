"""A real DNS server on loopback for tests: dnsmasq answering only from the
records a test declares, on a free port of 127.0.0.1.

    server = DnsServer()                      # skips (or fails on CI) without dnsmasq
    server.mx("example.test", "mx1.example.test", 10)
    server.a("mx1.example.test", "127.0.0.1")
    server.start()                            # records are fixed from here on
    resolver = MxResolver(nameservers=server.nameservers, port=server.port, timeout=2)
    ...
    server.stop()

or, per test, the ``dns_server`` fixture (declare, then ``start()``; stopped
after the test). To use it, re-export it in the test module or a conftest.py
(the ``as`` form keeps ruff's F401/F811 quiet):
``from tests.support.dns import dns_server as dns_server``.

Names under the ``zones`` given (default: the RFC 2606/6761 test names) are
answered authoritatively: an undeclared name is NXDOMAIN, a declared name
without the asked type is NOERROR with no answer. Names outside those zones
are REFUSED (dnsmasq has no upstream), which resolvers report as a server
failure.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from types import TracebackType

import dns.exception
import dns.message
import dns.query
import pytest

from tests.support.tools import require_program

DEFAULT_ZONES = ("test", "example", "invalid", "example.com", "example.net", "example.org")


def find_dnsmasq() -> str:
    """The dnsmasq executable; without one the test is skipped, or fails when
    the environment says CI=true (CI must not pass by skipping)."""
    return require_program("dnsmasq", "apt-get install dnsmasq")


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the DNS server")


def _check_text(value: str) -> str:
    if any(c in value for c in ',"\\\n\r\0'):
        raise ValueError(f'dnsmasq option value may not contain , " \\ or newlines: {value!r}')
    return value


class DnsServer:
    """dnsmasq on 127.0.0.1; declare records, then ``start()``."""

    def __init__(self, zones: Iterable[str] = DEFAULT_ZONES, *, log_queries: bool = False) -> None:
        self.executable = find_dnsmasq()
        self.zones = [z.strip(".") for z in zones]
        self.log_queries = log_queries
        self._records: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._port: int | None = None

    # -- records (before start) ------------------------------------------------

    def _add(self, option: str) -> DnsServer:
        if self._process is not None:
            raise RuntimeError("declare records before start(): dnsmasq reads them once")
        self._records.append(option)
        return self

    def mx(self, domain: str, host: str, preference: int) -> DnsServer:
        """An MX record; ``host="."`` with preference 0 is a null MX (RFC 7505)."""
        return self._add(f"--mx-host={_check_text(domain)},{_check_text(host)},{preference}")

    def null_mx(self, domain: str) -> DnsServer:
        return self.mx(domain, ".", 0)

    def a(self, name: str, *addresses: str) -> DnsServer:
        """A and AAAA records (by the address family of each)."""
        if not addresses:
            raise ValueError("a() needs at least one address")
        for address in addresses:
            self._add(f"--host-record={_check_text(name)},{_check_text(address)}")
        return self

    def txt(self, name: str, value: str) -> DnsServer:
        """A TXT record; ``value`` is split into 255-character strings, as a
        resolver joins them back (DKIM keys are longer than one string)."""
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        # On dnsmasq's command line a comma separates strings and quotes are
        # kept literally (only its config files unquote).
        strings = ",".join(_check_text(chunk) for chunk in chunks)
        return self._add(f"--txt-record={_check_text(name)},{strings}")

    def cname(self, alias: str, target: str) -> DnsServer:
        return self._add(f"--cname={_check_text(alias)},{_check_text(target)}")

    # -- process -----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the DNS server is not started")
        return self._port

    @property
    def nameservers(self) -> list[str]:
        return ["127.0.0.1"]

    def start(self, timeout: float = 5.0) -> DnsServer:
        if self._process is not None:
            raise RuntimeError("already started")
        for _attempt in range(3):  # another process may take the port first
            port = _free_port()
            self._log = tempfile.NamedTemporaryFile(prefix="dnsmasq-", suffix=".log")  # noqa: SIM115
            args = [
                self.executable,
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--conf-file=/dev/null",
                "--pid-file=",  # no pid file: several may run at once
                "--cache-size=0",
                # The TTL of every record declared here (dnsmasq's default, 0,
                # is one no real zone uses: nothing could be cached).
                "--local-ttl=300",
                *(f"--local=/{zone}/" for zone in self.zones),
                *self._records,
            ]
            if self.log_queries:
                args.append("--log-queries")
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
            if self._wait_ready(port, timeout):
                self._port = port
                return self
            self.stop()
        raise RuntimeError("dnsmasq did not start; see the log above")

    def _wait_ready(self, port: int, timeout: float) -> bool:
        assert self._process is not None
        probe = dns.message.make_query("ready.invalid.", "A")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                print(f"dnsmasq exited with {self._process.returncode}:\n{self.log()}")
                return False
            with contextlib.suppress(dns.exception.Timeout, OSError):
                dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.1)
                return True
        print(f"dnsmasq did not answer within {timeout} s:\n{self.log()}")
        return False

    def log(self) -> str:
        """What dnsmasq printed (its queries too with ``log_queries=True``)."""
        if self._log is None:
            return ""
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        process, self._process, self._port = self._process, None, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A DnsServer to declare records on and ``start()``; stopped afterwards."""
    server = DnsServer()
    try:
        yield server
    finally:
        server.stop()
