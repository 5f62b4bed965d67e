"""PATCH /v1/messages/{id} latency with and without Bayes training (issue 13
point 3, decision 0022).

Starts a server in this process on the embedded profile (a fresh data
directory), signs up one user, delivers ``--messages`` mails to it over SMTP
(half of one spam-like kind, half ordinary, each with its own words), marks
the ordinary ones read, then times, one request at a time over HTTP
(keep-alive, ``http.client`` in a thread so the figures are the server's):

- ``Inbox → Archive → Inbox`` moves: no training (what every move cost
  before);
- the first move into Junk (it also learns up to 30 read Inbox mails as
  ham while the account has too little);
- further moves into Junk (spam training), then the same mails back out of
  Junk (untrain spam, train ham);
- with ``--no-bayes``, moves into Junk and back without training (the
  filter off: the code path before this change).

Each as p50 / p95 / max in ms.

    .venv/bin/python bench/patch_latency.py --messages 200
    .venv/bin/python bench/patch_latency.py --messages 200 --no-bayes
    createdb -h 127.0.0.1 -U postgres mf_patch && .venv/bin/python bench/patch_latency.py \
        --metadata-url postgresql://postgres@127.0.0.1:5432/mf_patch   # then dropdb
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import smtplib
import statistics
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailfleet.config import load_settings
from mailfleet.server import ROLES, Server

DOMAIN = "example.com"
PASSWORD = "correct horse battery"


def deliver(port: int, to: str, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        for n in range(count):
            message = EmailMessage()
            spam = n % 2 == 0
            sender = f"promo{n}@deals.example" if spam else f"colleague{n}@corp.example"
            message["From"] = sender
            message["To"] = to
            message["Subject"] = f"Cheap watches {n}" if spam else f"Notes on item {n}"
            message["Date"] = "Tue, 01 Dec 2026 04:00:00 +0000"
            message["Message-ID"] = f"<bench{n}@{sender.rpartition('@')[2]}>"
            words = " ".join(f"w{n}x{i}" for i in range(150))
            message.set_content(
                f"Replica watches at 90% off http://shop{n}.deals.example/ {words}\n"
                if spam
                else f"Can we go over the notes before Friday? {words}\n"
            )
            client.send_message(message, from_addr=sender, to_addrs=[to])


class Client:
    def __init__(self, host: str, port: int, token: str = "") -> None:
        self.conn = http.client.HTTPConnection(host, port)
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def timed_patch(self, message_id: str, body: dict[str, Any]) -> float:
        started = time.perf_counter()
        status, answer = self.call("PATCH", f"/v1/messages/{message_id}", body)
        elapsed = (time.perf_counter() - started) * 1000
        assert status == 200, answer
        return elapsed


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"{name:<44} n={len(samples):<4} p50={statistics.median(ordered):6.2f} ms"
        f"  p95={p95:6.2f} ms  max={ordered[-1]:6.2f} ms"
    )


def measure(host: str, port: int, smtp_port: int, messages: int, bayes: bool) -> None:
    anonymous = Client(host, port)
    email = f"bench@{DOMAIN}"
    anonymous.call("POST", "/v1/accounts", {"email": email, "password": PASSWORD, "name": "B"})
    _, session = anonymous.call("POST", "/v1/sessions", {"email": email, "password": PASSWORD})
    client = Client(host, port, session["token"])
    deliver(smtp_port, email, messages)
    _, folders = client.call("GET", "/v1/folders")
    role = {f["role"]: f["id"] for f in folders}
    deadline = time.monotonic() + 60
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = []
        cursor = None
        while True:
            query = f"?limit=200{'&cursor=' + cursor if cursor else ''}"
            _, page = client.call("GET", f"/v1/folders/{role['inbox']}/messages{query}")
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        if len(items) >= messages:
            break
        time.sleep(0.2)
    spam = [m["id"] for m in items if m["subject"].startswith("Cheap")]
    ham = [m["id"] for m in items if not m["subject"].startswith("Cheap")]
    for message_id in ham:
        client.timed_patch(message_id, {"is_read": True})
    plain = []
    for message_id in ham[: len(ham) // 2]:
        plain.append(client.timed_patch(message_id, {"folder_id": role["archive"]}))
        plain.append(client.timed_patch(message_id, {"folder_id": role["inbox"]}))
    label = "" if bayes else " (bayes off)"
    report("Inbox <-> Archive (no training)" + label, plain)
    first = client.timed_patch(spam[0], {"folder_id": role["junk"]})
    into = [client.timed_patch(m, {"folder_id": role["junk"]}) for m in spam[1:]]
    back = [client.timed_patch(m, {"folder_id": role["inbox"]}) for m in spam[1:]]
    report("first move into Junk (+ kept mail as ham)" + label, [first])
    report("Inbox -> Junk (train spam)" + label, into)
    report("Junk -> Inbox (untrain spam, train ham)" + label, back)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--no-bayes", action="store_true")
    parser.add_argument(
        "--metadata-url", default="", help="an empty PostgreSQL database (default: SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-patch-") as scratch:
        data = Path(scratch) / "data"
        settings = load_settings(
            None,
            {
                "data_dir": str(data),
                "http": {"listen": "127.0.0.1:0"},
                "smtp": {"listen": "127.0.0.1:0", "submission_listen": "127.0.0.1:0"},
                "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 256},
                "domains": [{"name": DOMAIN, "open_signup": True}],
                "filters": {"bayes": not args.no_bayes},
                **({"storage": {"metadata_url": args.metadata_url}} if args.metadata_url else {}),
            },
        )
        roles = tuple(role for role in ROLES if role != "worker-out")
        server = await Server.open(settings, roles)
        await server.start()
        try:
            host, port = server.http_address
            await asyncio.to_thread(
                measure, host, port, server.smtp_address[1], args.messages, not args.no_bayes
            )
        finally:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
