"""An S3 server on loopback for the local fleet and the tests: moto's S3
application (``moto[server]``, a real S3 HTTP API keeping its data in memory),
served by uvicorn instead of ``moto_server``.

Why not ``moto_server``: it runs on Werkzeug's development server, which
closes the connection after every response (no keep-alive: each request of
the fleet's S3 client was a new TCP connection, a name lookup in a thread and
a new server thread), and it routes every request through moto's dispatcher
of all AWS services. Served here, only S3, on keep-alive connections: on the
fleet's SMTP path, half the server's CPU per request and a third less of the
client's (``bench/fleet_ingest.py``, docs/benchmarks.md).

    python -m mailfleet.loopback_s3 --port 9000 [--host 127.0.0.1]

Environment: ``S3_UPLOAD_PART_MIN_SIZE`` (moto's minimum part size, as AWS's
5 MiB by default; the tests lower it).
"""

from __future__ import annotations

import argparse
import os
import sys


def command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that starts this server (the local fleet and the
    tests start it the same way)."""
    return [sys.executable, "-m", "mailfleet.loopback_s3", "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mailfleet.loopback_s3", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # moto writes its own address into some answers (presigned URLs,
    # multipart locations) from this variable.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    import uvicorn
    from moto.moto_server.werkzeug_app import create_backend_app

    uvicorn.run(
        create_backend_app("s3"),
        host=args.host,
        port=args.port,
        interface="wsgi",
        access_log=False,
        log_level="warning",
        # S3 clients keep connections for a while between bursts.
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
