"""The JetStream queue on a three-node cluster (replicas=3) keeps every put it
acknowledged when the stream's leader is SIGKILLed mid-run: puts wait out the
election (retried under the same Nats-Msg-Id) and each acknowledged item is
consumed exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from mailfleet.storage.distributed.nats_queue import NatsQueue
from mailfleet.storage.errors import BackendUnavailable
from mailfleet.storage.interfaces import QueuePolicy
from tests.support.tools import require_program

POLICIES = {"incoming": QueuePolicy(lease_seconds=60, max_deliveries=5)}
BEFORE_KILL = 150
TOTAL = 450


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    name: str
    port: int
    process: asyncio.subprocess.Process


async def _wait_for_jetstream(urls: list[str]) -> None:
    """Until the cluster has a meta leader: a stream can be created then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, max_reconnect_attempts=1)
            try:
                reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                if "error" not in json.loads(reply.data):
                    return
            finally:
                await nc.close()
        except (OSError, nats.errors.Error):
            pass
        if loop.time() > deadline:
            raise AssertionError("the JetStream cluster did not elect a meta leader in 15 s")
        await asyncio.sleep(0.2)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[Node]]:
    server = require_program("nats-server", "apt-get install nats-server")
    ports = _free_ports(6)
    client_ports, route_ports = ports[:3], ports[3:]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
    nodes: list[Node] = []
    try:
        for i, (port, route) in enumerate(zip(client_ports, route_ports, strict=True)):
            name = f"n{i + 1}"
            store = tmp_path / name
            store.mkdir()
            command = [server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
            command += ["--cluster_name", "mf", "--cluster", f"nats://127.0.0.1:{route}"]
            command += ["--routes", routes, "-n", name]
            with (tmp_path / f"{name}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *command, stdout=log, stderr=subprocess.STDOUT
                )
            nodes.append(Node(name, port, process))
        await _wait_for_jetstream([f"nats://127.0.0.1:{n.port}" for n in nodes])
        yield nodes
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.process.terminate()
        for node in nodes:
            try:
                await asyncio.wait_for(node.process.wait(), 10)
            except TimeoutError:
                node.process.kill()
                await node.process.wait()


async def _open_queue(url: str) -> NatsQueue:
    """The stream's creation waits for the new cluster to place it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        queue = NatsQueue(url, POLICIES)
        try:
            await queue.open()
            return queue
        except Exception:
            await queue.close()
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_every_acknowledged_put_survives_the_leader_s_death_exactly_once(
    cluster: list[Node],
) -> None:
    servers = ",".join(f"127.0.0.1:{n.port}" for n in cluster)
    queue = await _open_queue(f"nats://{servers}/?prefix=tcluster&replicas=3")
    acknowledged: list[int] = []
    failed: list[int] = []
    numbers = iter(range(TOTAL))
    enough = asyncio.Event()

    async def producer() -> None:
        for n in numbers:
            try:
                await queue.put("incoming", {"n": n})
                acknowledged.append(n)
            except BackendUnavailable:
                failed.append(n)
            if len(acknowledged) >= BEFORE_KILL:
                enough.set()

    try:
        # Several puts in flight, as concurrent SMTP sessions make them.
        producers = [asyncio.create_task(producer()) for _ in range(8)]
        await asyncio.wait_for(enough.wait(), 10)
        info = await queue._api(f"$JS.API.STREAM.INFO.{queue.stream_name('incoming')}", {})
        leader = info["cluster"]["leader"]
        (victim,) = [n for n in cluster if n.name == leader]
        assert info["cluster"]["replicas"] and len(info["cluster"]["replicas"]) == 2
        os.kill(victim.process.pid, signal.SIGKILL)
        await victim.process.wait()
        await asyncio.wait_for(asyncio.gather(*producers), 40)
        assert len(acknowledged) > BEFORE_KILL  # puts went on after the kill

        fetched: Counter[int] = Counter()
        # As worker-in does: a fetch the cluster cannot answer yet (its
        # consumer's leader is still being elected) is tried again.
        give_up = asyncio.get_running_loop().time() + 30
        while True:
            try:
                items = await queue.fetch("incoming", limit=64, timeout=1)
            except BackendUnavailable:
                assert asyncio.get_running_loop().time() < give_up, "no consumer leader in 30 s"
                await asyncio.sleep(0.5)
                continue
            if not items:
                break
            for item in items:
                fetched[item.payload["n"]] += 1
            await queue.ack_many(items)
        assert (await queue.stats("incoming")).depth == 0
        assert {n: fetched[n] for n in acknowledged if fetched[n] != 1} == {}
        # A put that gave up may have been stored (its PubAck was lost), never twice.
        assert all(fetched[n] <= 1 for n in failed)
        info = await queue._api(f"$JS.API.STREAM.INFO.{queue.stream_name('incoming')}", {})
        assert info["cluster"]["leader"] != leader
    finally:
        try:
            # The cluster is this test's own and is removed with its
            # directory: a stream left because the new leader is still busy
            # (seen in CI: STREAM.NAMES unanswered for 5 s) harms nothing.
            with contextlib.suppress(BackendUnavailable):
                await queue.delete_streams()
        finally:
            await queue.close()
