"""A real rspamd (Debian's package) for tests, on free loopback ports, with
its own configuration overrides, data and run directories in a temporary
directory; Debian's stock rules otherwise.

    with RspamdServer() as rspamd:
        rspamd.url   # http://127.0.0.1:PORT, the normal worker (/checkv2)

Its DNS points at a port nobody answers on with short timeouts (only
loopback exists here), so network checks (RBLs, SPF) end as DNS failures
within a second, as on an offline host. No Redis: Bayes and greylisting,
which need it, stay off. rspamd must run as root with ``-i`` here (see
../shared/NOTES.md); as another user it runs as that user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.tools import require_program


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RspamdServer:
    def __init__(self) -> None:
        self.executable = require_program("rspamd", "apt-get install rspamd")
        self._dir = tempfile.TemporaryDirectory(prefix="mailfleet-rspamd-")
        self.root = Path(self._dir.name)
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _configure(self) -> None:
        local = self.root / "local" / "local.d"
        local.mkdir(parents=True)
        for name in ("db", "run", "log"):
            (self.root / name).mkdir()
        (local / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n'
        )
        (local / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{_free_port()}";\ncount = 1;\n'
        )
        for worker in ("proxy", "fuzzy"):
            (local / f"worker-{worker}.inc").write_text("enabled = false;\ncount = 0;\n")
        (local / "options.inc").write_text(
            'dns {\n  nameserver = ["127.0.0.1:1"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n'
        )
        (local / "logging.inc").write_text(
            f'type = "file";\nfilename = "{self.root}/log/rspamd.log";\nlevel = "warning";\n'
        )

    def start(self, timeout: float = 30.0) -> RspamdServer:
        self._configure()
        command = [self.executable, "-f", "-c", "/etc/rspamd/rspamd.conf"]
        if os.geteuid() == 0:
            command += ["-i", "-u", "root", "-g", "root"]
        command += [
            f"--var=LOCAL_CONFDIR={self.root}/local",
            f"--var=DBDIR={self.root}/db",
            f"--var=RUNDIR={self.root}/run",
            f"--var=LOGDIR={self.root}/log",
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rspamd exited at start:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rspamd did not listen within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        path = self.root / "log" / "rspamd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._dir.cleanup()

    def __enter__(self) -> RspamdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
