"""smtp-in behind a TCP balancer: a real HAProxy (Debian's, ``send-proxy``)
forwards a client's connection and the MX takes the client's address from
the PROXY header: the Received line names the client, not HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Service, StartService, User
from tests.support.tools import require_program
from tests.test_restart import free_port

# Loopback is all of 127/8: the client and HAProxy use different addresses
# so the Received line can tell them apart.
CLIENT_IP = "127.0.0.7"
BALANCER_IP = "127.0.0.1"


@contextlib.contextmanager
def haproxy(tmp_path: Path, backend_port: int, extra: str = "send-proxy") -> Iterator[int]:
    """HAProxy in TCP mode on a free port in front of ``backend_port``."""
    program = require_program("haproxy", "apt-get install haproxy")
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp
    bind 127.0.0.1:{port}
    default_backend mx
backend mx
    source {BALANCER_IP}
    server mx1 127.0.0.1:{backend_port} {extra}
"""
    )
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [program, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail(f"haproxy exited: {log.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.1),
            ):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def proxied(start_service: StartService) -> Service:
    return await start_service(
        {"smtp": {"proxy_protocol": True, "proxy_trusted": [f"{BALANCER_IP}/32"]}}
    )


def send(port: int, to: str, subject: str, source: str = CLIENT_IP) -> tuple[int, bytes]:
    client = smtplib.SMTP(timeout=10, source_address=(source, 0))
    try:
        client.connect("127.0.0.1", port)
        client.ehlo("client.example.net")
        message = f"From: a@outside.example\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhi\r\n"
        for reply in (client.mail("a@outside.example"), client.rcpt(to)):
            if reply[0] != 250:
                return reply
        return client.data(message.encode())
    finally:
        client.quit()


async def raw_of(user: User, subject: str) -> str:
    for _ in range(200):
        items = await user.messages("inbox")
        found = [m for m in items if m["subject"] == subject]
        if found:
            response = await user.client.get(f"/v1/messages/{found[0]['id']}/raw")
            return response.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{subject!r} never arrived")


async def test_the_received_line_names_the_client_behind_haproxy(
    proxied: Service, tmp_path: Path
) -> None:
    bob = await proxied.user("bob")
    with haproxy(tmp_path, proxied.smtp_port) as port:
        code, _ = await asyncio.to_thread(send, port, bob.email, "through the balancer")
    assert code == 250
    raw = await raw_of(bob, "through the balancer")
    received = next(line for line in raw.splitlines() if line.startswith("Received:"))
    assert f"[{CLIENT_IP}]" in received
    assert f"[{BALANCER_IP}]" not in received


async def test_per_ip_limits_count_the_client_not_the_balancer(
    start_service: StartService, tmp_path: Path
) -> None:
    service = await start_service(
        {
            "smtp": {
                "proxy_protocol": True,
                "proxy_trusted": [f"{BALANCER_IP}/32"],
                "messages_per_minute_per_ip": 1,
            }
        }
    )
    bob = await service.user("bob")
    with haproxy(tmp_path, service.smtp_port) as port:
        assert (await asyncio.to_thread(send, port, bob.email, "first"))[0] == 250
        # The same client again is over its limit, through the same balancer...
        assert (await asyncio.to_thread(send, port, bob.email, "second"))[0] == 451
        # ...and another client through it is not: the balancer is not counted.
        assert (await asyncio.to_thread(send, port, bob.email, "other", "127.0.0.8"))[0] == 250
    # A trusted address that speaks SMTP instead of a PROXY header is no
    # balancer: no greeting, hung up on (else it could pose as any client).
    reader, writer = await asyncio.open_connection("127.0.0.1", service.smtp_port)
    writer.write(b"EHLO client.example.net\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_an_untrusted_peer_is_served_as_itself(proxied: Service) -> None:
    bob = await proxied.user("bob")
    code, _ = await asyncio.to_thread(send, proxied.smtp_port, bob.email, "direct")
    assert code == 250
    raw = await raw_of(bob, "direct")
    assert f"[{CLIENT_IP}]" in raw
