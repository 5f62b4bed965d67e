"""A real Postfix (Debian's package) as a remote domain's MX: a separate,
loopback-only instance in a temporary directory, on a free port, delivering
its domain's mail to Maildirs, never relaying anywhere. Modelled on
../shared/bench/postfix_anchor.sh.

    postfix = PostfixInstance("remote.test", ["carol"]).start()
    ... postfix.port ...
    postfix.maildir_messages("carol")   # each delivered message, as bytes
    postfix.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.tools import missing, require_program

POSTFIX_INSTALL = (
    "echo 'postfix postfix/main_mailer_type select No configuration' "
    "| debconf-set-selections && apt-get install postfix"
)
VMAIL_USER = "vmail"


def require_postfix() -> str:
    """The postfix command; skips without it (or without root), or fails when CI=true."""
    path = require_program("postfix", POSTFIX_INSTALL)
    if os.geteuid() != 0:
        missing("a Postfix instance needs root")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostfixInstance:
    def __init__(self, domain: str, users: list[str]) -> None:
        self.postfix = require_postfix()
        # Not under pytest's tmp_path: its directories are 0700 root, and
        # Postfix's daemons run as the postfix and vmail users.
        self.base = Path(tempfile.mkdtemp(prefix="mailfleet-postfix-"))
        self.base.chmod(0o755)
        self.domain = domain
        self.users = users
        self.port = _free_port()
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.mail = self.base / "vmail"
        self.log = self.base / "postfix.log"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.postfix, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def _vmail_ids(self) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(VMAIL_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    VMAIL_USER,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(VMAIL_USER)
        return entry.pw_uid, entry.pw_gid

    def start(self) -> PostfixInstance:
        uid, gid = self._vmail_ids()
        for path in (self.conf, self.queue, self.data, self.mail):
            path.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail, uid, gid)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        master = Path("/usr/share/postfix/master.cf.dist")
        if not master.exists():
            master = Path("/etc/postfix/master.cf.proto")
        text = master.read_text()
        # No port-25 listener: ours only, on loopback. Nothing chrooted.
        lines = [line for line in text.splitlines() if not line.startswith("smtp      inet")]
        lines.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
syslog_name = postfix-test
maillog_file = {self.log}
maillog_file_prefixes = {self.base}
myhostname = mx.{self.domain}
mydomain = {self.domain}
mydestination =
local_transport = error:5.1.1 no local delivery
alias_maps =
alias_database =
biff = no
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
default_transport = error:5.7.1 this test instance never relays
relay_transport = error:5.7.1 this test instance never relays
smtpd_relay_restrictions = reject_unauth_destination
notify_classes =
smtputf8_enable = yes
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.conf}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_transport = virtual
"""
        )
        (self.conf / "vmailbox").write_text(
            "".join(f"{u}@{self.domain} {self.domain}/{u}/\n" for u in self.users)
        )
        started = self._run("start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix did not start: {started.stderr}{started.stdout}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postfix is not listening on {self.port}: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def maildir_messages(self, user: str) -> list[bytes]:
        new = self.mail / self.domain / user / "new"
        if not new.is_dir():
            return []
        return [path.read_bytes() for path in sorted(new.iterdir())]

    def stop(self) -> None:
        self._run("stop")
        shutil.rmtree(self.base, ignore_errors=True)
