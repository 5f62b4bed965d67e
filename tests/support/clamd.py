"""The tests' own ClamAV daemon: ``clamd`` from Debian's ``clamav-daemon``
on a unix socket and a loopback TCP port in a temporary directory, with a
signature database the tests write, since the official ones cannot be
downloaded here: the EICAR test file and one custom signature
(``CUSTOM_MARKER``), both ``.ndb`` body signatures.

Started once per session (``clamd`` fixture in ``tests/conftest.py``);
``stop``/``start`` let a test take it away and bring it back.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.tools import SBIN, missing

MISSING = "clamd missing: apt-get install clamav-daemon"

# The EICAR anti-virus test file (eicar.org): harmless, found by every scanner.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM_MARKER = b"MAILFLEET-TEST-MALWARE-9f3c2a71-DO-NOT-DELIVER"
EICAR_NAME = "Mailfleet.Test.EICAR.UNOFFICIAL"
CUSTOM_NAME = "Mailfleet.Test.Custom.UNOFFICIAL"


def zipped(name: str, data: bytes) -> bytes:
    """A zip archive holding ``data`` as ``name`` (clamd and the attachment
    policy both look inside)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Clamd:
    def __init__(self, program: str, root: Path) -> None:
        self.program = program
        self.root = root
        self.socket_path = root / "clamd.sock"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        database = root / "db"
        database.mkdir()
        (database / "mailfleet.ndb").write_text(
            f"Mailfleet.Test.EICAR:0:*:{EICAR.hex()}\n"
            f"Mailfleet.Test.Custom:0:*:{CUSTOM_MARKER.hex()}\n"
        )
        self.config = root / "clamd.conf"
        self.config.write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"LocalSocket {self.socket_path}",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"DatabaseDirectory {database}",
                    f"LogFile {root / 'clamd.log'}",
                    "StreamMaxLength 30M",
                    "SelfCheck 3600",
                    "",
                ]
            )
        )

    @property
    def unix_url(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with (self.root / "clamd.err").open("ab") as errors:
            self.process = subprocess.Popen(
                [self.program, "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None:
                said = (self.root / "clamd.err").read_text(errors="replace")[-2000:]
                log = (self.root / "clamd.log").read_text(errors="replace")[-2000:]
                self.process = None
                raise RuntimeError(f"clamd did not start: {said}\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("clamd did not answer within 30 s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kills it at once (SIGKILL: a graceful stop takes clamd two
        seconds, and a daemon that dies is what the tests are about)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


@contextlib.contextmanager
def running_clamd() -> Iterator[Clamd]:
    """Fails in CI, skips elsewhere, when clamd is not installed."""
    program = shutil.which("clamd") or shutil.which("clamd", path=SBIN)
    if program is None:
        missing(MISSING)
    assert program is not None
    with tempfile.TemporaryDirectory(prefix="mailfleet-clamd-") as scratch:
        clamd = Clamd(program, Path(scratch))
        clamd.start()
        try:
            yield clamd
        finally:
            clamd.stop()
