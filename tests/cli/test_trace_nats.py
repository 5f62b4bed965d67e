"""The correlation id crosses NATS JetStream (decision 0029): smtp-in and
worker-in in two processes on the distributed profile, each its own JSON
log; the queue item's payload carries the id from one to the other, and
``mailfleet trace`` joins the two files. Run by ``scripts/test``'s
distributed pass only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_trace import hops_in_order, receive_over_smtp, records, trace
from tests.cli.test_trace import spawn as spawn


@pytest.mark.distributed_only("the embedded queue is test_trace.py's")
async def test_trace_id_crosses_the_nats_queue(spawn: Callable[..., Any], tmp_path: Path) -> None:
    queue_id, logs = await receive_over_smtp(spawn, tmp_path, "<nats.1@outside.example>")
    stored = next(r for r in records(logs / "worker-in.log") if r["event"] == "stored")
    assert stored["trace_id"] == queue_id
    shown = await asyncio.to_thread(
        trace, tmp_path / "data", "<nats.1@outside.example>", str(logs / "*.log")
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    hops_in_order(shown.stdout, "received", "queued", "stored")
    assert "api+smtp-in" in shown.stdout and "worker-in" in shown.stdout
