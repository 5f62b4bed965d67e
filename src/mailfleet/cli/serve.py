"""``mailfleet serve``: every role in one process on the configured stores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailfleet.config import Settings
from mailfleet.errors import Conflict

if TYPE_CHECKING:
    from mailfleet.server import Server

DEMO_DOMAIN = "demo.mailfleet.test"
DEMO_USERS = (("alice", "Alice Demo"), ("bob", "Bob Demo"))


def register(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser("serve", help="run all roles in one process")
    parser.add_argument("--http", metavar="HOST:PORT", help="HTTP API (default 127.0.0.1:8080)")
    parser.add_argument("--smtp", metavar="HOST:PORT", help="MX server (default 127.0.0.1:2525)")
    parser.add_argument(
        "--submission", metavar="HOST:PORT", help="submission (default 127.0.0.1:2587)"
    )
    parser.add_argument(
        "--roles",
        default="",
        help="comma-separated roles to run, of api, realtime, smtp-in, submission, "
        "worker-in and worker-out (default: every role)",
    )
    parser.add_argument(
        "--demo", action="store_true", help=f"create {DEMO_DOMAIN} with two users and say how"
    )
    common(parser)
    parser.set_defaults(handler=_serve, overrides=serve_overrides)


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if getattr(args, "http", None):
        values.setdefault("http", {})["listen"] = args.http
    if getattr(args, "smtp", None):
        values.setdefault("smtp", {})["listen"] = args.smtp
    if getattr(args, "submission", None):
        values.setdefault("smtp", {})["submission_listen"] = args.submission
    return values


async def _create_demo(server: Server) -> list[tuple[str, str]]:
    accounts = server.runtime.accounts
    await accounts.ensure_domain(DEMO_DOMAIN, open_signup=True)
    made = []
    for local, name in DEMO_USERS:
        email = f"{local}@{DEMO_DOMAIN}"
        password = secrets.token_urlsafe(9)
        try:
            await accounts.add_user(email, password, name)
        except Conflict:
            await accounts.set_password(email, password)
        made.append((email, password))
    return made


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from mailfleet.delivery.incoming_process import WorkerInProcess
    from mailfleet.logs import configure as configure_logs
    from mailfleet.server import ROLES, Server  # the HTTP stack loads only for serve

    configure_logs(settings.logging)

    roles = [r.strip() for r in args.roles.split(",") if r.strip()] or list(ROLES)
    # Beside other roles, worker-in runs in a child process: a core of its own
    # instead of a share of the MX's event loop (delivery/incoming_process.py).
    worker_in = WorkerInProcess(settings) if "worker-in" in roles and len(roles) > 1 else None
    server = await Server.open(settings, [r for r in roles if r != "worker-in" or not worker_in])
    try:
        demo = await _create_demo(server) if args.demo else []
        if worker_in is not None:
            await worker_in.start()
        await server.start()
        if set(roles) == {"realtime"}:
            # Only where the role runs alone: the other roles' objects were not
            # made to be frozen (realtime/collector.py).
            from mailfleet.realtime.collector import freeze_startup_heap

            freeze_startup_heap()
        print(f"mailfleet: {', '.join(roles)} (data in {settings.data_dir})")
        if server.smtp_socket is not None:
            print("  SMTP (MX) on {}:{}".format(*server.smtp_address))
        if server.submission_socket is not None:
            print("  SMTP submission on {}:{}".format(*server.submission_address))
        host, port = server.http_address if server.http_socket else ("", 0)
        if port:
            print(f"  HTTP API on http://{host}:{port}")
            if "api" in server.roles:
                print(f"  webmail on http://{host}:{port}/")
        for email, password in demo:
            print(f"  demo login: {email}  password: {password}")
        if demo:
            print(
                f"  try: curl -s -X POST http://{host}:{port}/v1/sessions "
                f"-H 'content-type: application/json' "
                f'-d \'{{"email": "{demo[0][0]}", "password": "{demo[0][1]}"}}\''
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("mailfleet: stopping")
    finally:
        if worker_in is not None:
            with contextlib.suppress(Exception):
                await worker_in.stop()
        with contextlib.suppress(Exception):
            await server.stop()
    return 0
