"""Time from the MX's 250 to the mail being visible through the HTTP API.

Sends ``--count`` mails at ``--rate`` per second over ``--connections`` SMTP
sessions, notes when each 250 arrives, and polls the recipient's Inbox listing
(first page) every ``--poll-ms`` until each subject shows up; prints p50/p99.

    .venv/bin/python bench/smtp_latency.py --smtp 127.0.0.1:2625 \
        --http http://127.0.0.1:8625 --token TOKEN --rcpt user1@example.test --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiosmtplib
import httpx


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smtp", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rcpt", required=True)
    parser.add_argument(
        "--sender",
        default="bench@sender.bench.test",
        help="MAIL FROM and From: an outside domain (smtp_ingest.sh's DNS names it)",
    )
    parser.add_argument("--rate", type=float, required=True, help="messages per second")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--poll-ms", type=float, default=5)
    args = parser.parse_args()
    host, port = args.smtp.rsplit(":", 1)
    accepted: dict[str, float] = {}
    visible: dict[str, float] = {}
    body = ("x" * 70 + "\r\n") * 55
    start = time.perf_counter()

    async def sender(worker: int) -> None:
        async with aiosmtplib.SMTP(hostname=host, port=int(port), start_tls=False) as smtp:
            for i in range(worker, args.count, args.connections):
                due = start + i / args.rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                subject = f"lat-{i:06d}"
                await smtp.sendmail(
                    args.sender,
                    [args.rcpt],
                    f"From: <{args.sender}>\r\nSubject: {subject}\r\n\r\n{body}",
                )
                accepted[subject] = time.perf_counter()

    async def watcher() -> None:
        headers = {"Authorization": f"Bearer {args.token}"}
        async with httpx.AsyncClient(base_url=args.http, headers=headers) as client:
            folders = (await client.get("/v1/folders")).json()
            inbox = next(f["id"] for f in folders if f["role"] == "inbox")
            while len(visible) < args.count:
                page = (await client.get(f"/v1/folders/{inbox}/messages?limit=100")).json()
                now = time.perf_counter()
                for item in page["items"]:
                    visible.setdefault(item["subject"], now)
                await asyncio.sleep(args.poll_ms / 1000)

    watch = asyncio.create_task(watcher())
    await asyncio.gather(*(sender(w) for w in range(args.connections)))
    await asyncio.wait_for(watch, 60)
    delays = sorted((visible[s] - accepted[s]) * 1000 for s in accepted if s in visible)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(
        f"250 -> visible over {len(delays)} mails at {args.rate:.0f}/s: "
        f"p50 {statistics.median(delays):.1f} ms, p99 {p99:.1f} ms, max {delays[-1]:.1f} ms "
        f"(poll every {args.poll_ms} ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
