"""PostgreSQL shards (decision 0016): each account's rows on its own shard
only, new accounts spread by load, ``mailfleet db upgrade`` over the
directory and every shard, and ``account move`` while writes go on: nothing
lost, nothing twice, every flag, folder and change intact, nothing left on
the old shard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mailfleet.cli.main import main
from mailfleet.ids import new_id
from mailfleet.search.query import parse
from mailfleet.storage.distributed.pg_bayes import PgBayesStore
from mailfleet.storage.distributed.pg_database import asyncpg_dsn
from mailfleet.storage.distributed.pg_mailbox import PgMailboxStore
from mailfleet.storage.distributed.pg_move import ACCOUNT_TABLES, move_account
from mailfleet.storage.distributed.pg_search import PgSearchIndex
from mailfleet.storage.distributed.pg_shards import PgCluster, ShardConfig
from mailfleet.storage.interfaces import MessagePatch, TokenCounts, Training
from tests.conftest import DOMAIN, StartService
from tests.contract.mailboxes import Box, counted, counters, mail, new_box
from tests.support.postgres import empty_database, fresh_databases

TTL = 0.5  # placement cache lifetime in these tests: moves settle quickly


@pytest.fixture
async def urls() -> AsyncIterator[list[str]]:
    async with fresh_databases(3) as found:
        yield found


def _cluster(urls: list[str]) -> PgCluster:
    directory, shard0, shard1 = urls
    return PgCluster(
        directory,
        [ShardConfig("shard0", shard0), ShardConfig("shard1", shard1)],
        placement_ttl=TTL,
    )


async def _rows(url: str, account_id: int) -> dict[str, int]:
    """The account's rows in each mailbox table of one database, read directly."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        found = {}
        for table in ACCOUNT_TABLES:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE account_id = $1", account_id
            )
            if count:
                found[table] = count
        return found
    finally:
        await conn.close()


async def test_each_account_lives_on_its_own_shard_only(urls: list[str]) -> None:
    cluster = _cluster(urls)
    store = PgMailboxStore(cluster)
    await store.open()
    try:
        boxes = [await new_box(store) for _ in range(6)]
        for box in boxes:
            await store.store_messages([mail(box), mail(box, "archive")])
        # One call for accounts on both shards (the send flow's copies).
        await store.store_messages([mail(box, "sent") for box in boxes])
        placed = {b.account_id: await cluster.shard_name(b.account_id) for b in boxes}
        assert sorted(placed.values()) == ["shard0"] * 3 + ["shard1"] * 3
        shard_urls = {"shard0": urls[1], "shard1": urls[2]}
        for box in boxes:
            own = shard_urls[placed[box.account_id]]
            other = shard_urls["shard1" if placed[box.account_id] == "shard0" else "shard0"]
            assert (await _rows(own, box.account_id))["messages"] == 3
            assert await _rows(other, box.account_id) == {}
            assert await _rows(urls[0], box.account_id) == {}  # the directory holds none
    finally:
        await store.close()


async def _fill(store: PgMailboxStore, box: Box) -> list[int]:
    ids = await store.store_messages([mail(box, "inbox", subject=f"old {i}") for i in range(40)])
    for message_id in ids[:10]:
        await store.update_message(box.account_id, message_id, MessagePatch(is_flagged=True))
    for message_id in ids[10:20]:
        await store.update_message(
            box.account_id, message_id, MessagePatch(folder_id=box.folder("Projects"))
        )
    for message_id in ids[20:25]:
        await store.update_message(box.account_id, message_id, MessagePatch(is_read=True))
    return ids


async def test_account_move_while_writes_go_on_loses_and_repeats_nothing(
    urls: list[str],
) -> None:
    # Two clusters stand for two processes: the mover, and a server whose
    # cached placement goes stale under it.
    mover, server = _cluster(urls), _cluster(urls)
    moving = PgMailboxStore(mover)
    serving = PgMailboxStore(server)
    search = PgSearchIndex(server)
    await moving.open()
    await serving.open()
    await search.open()
    try:
        box = await new_box(moving, "Projects")
        await new_box(moving)  # a neighbour that stays where it is
        before = await _fill(serving, box)
        source = await server.shard_name(box.account_id)
        target = "shard1" if source == "shard0" else "shard0"
        listed_before = {
            f.id: (f.total, f.unread) for f in await serving.list_folders(box.account_id)
        }
        head_before = (await serving.changes(box.account_id, 0, limit=1)).head

        acknowledged: list[int] = []
        flagged_late: list[int] = []
        stop = asyncio.Event()

        async def keep_writing() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                new = mail(box, subject=f"during {n}", ingest_key=f"during:{n}")
                # Each write either returns (stored) or raises: never both.
                (stored,) = await serving.store_messages([new])
                acknowledged.append(stored)
                if n % 3 == 0:
                    await serving.update_message(
                        box.account_id, stored, MessagePatch(is_flagged=True)
                    )
                    flagged_late.append(stored)
                await asyncio.sleep(0.005)

        writer = asyncio.create_task(keep_writing())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        report = await move_account(mover, box.account_id, target, settle_seconds=TTL + 0.5)
        await asyncio.sleep(0.3)  # writes on the new shard too
        stop.set()
        await writer

        assert report.source == source and report.target == target
        assert report.writes_paused_seconds < 5, report
        assert time.monotonic() - started < 15
        assert len(acknowledged) > 20 and len(set(acknowledged)) == len(acknowledged)

        shard_urls = {"shard0": urls[1], "shard1": urls[2]}
        assert await _rows(shard_urls[source], box.account_id) == {}
        on_target = await _rows(shard_urls[target], box.account_id)
        assert on_target["messages"] == len(before) + len(acknowledged)
        assert await server.shard_name(box.account_id, fresh=True) == target

        every = {
            s.id: s
            for f in await serving.list_folders(box.account_id)
            for s in await serving.list_messages(
                box.account_id, f.id, is_read=None, limit=10_000, after=None
            )
        }
        assert set(every) == set(before) | set(acknowledged)
        assert {i for i, s in every.items() if s.is_flagged} == set(before[:10]) | set(flagged_late)
        assert {i for i, s in every.items() if s.folder_id == box.folder("Projects")} == set(
            before[10:20]
        )
        assert {i for i, s in every.items() if s.is_read} == set(before[20:25])
        assert await counters(serving, box) == await counted(serving, box)
        assert listed_before[box.folder("Projects")] == (10, 10)

        # The change log goes on from where it was, with no gap and no repeat.
        page = await serving.changes(box.account_id, 0, limit=100_000)
        assert not page.reset
        assert [c.seq for c in page.changes] == list(range(1, page.head + 1))
        assert page.head > head_before
        new_ids = [c.data["id"] for c in page.changes if c.kind == "message.new"]
        assert sorted(new_ids) == sorted([*before, *acknowledged])

        # Searchable on the new shard.
        found = await search.search(
            box.account_id,
            parse('"old 7"'),
            folders={},
            limit=10,
            before_id=None,
        )
        assert [s.id for s in found] == [before[7]]
    finally:
        await search.close()
        await serving.close()
        await moving.close()


async def test_a_write_waits_for_the_move_then_lands_on_the_new_shard(
    urls: list[str],
) -> None:
    cluster = _cluster(urls)
    store = PgMailboxStore(cluster)
    await store.open()
    try:
        box = await new_box(store)
        await cluster.shard_name(box.account_id)  # cached now
        source = await cluster.shard_name(box.account_id)
        target = "shard1" if source == "shard0" else "shard0"
        # Fence the account by hand, as step 2 of a move does, and let a
        # write run into it.
        async with cluster.directory.write() as conn:
            await conn.execute(
                "UPDATE placements SET state = 'moving', moving_to = $2 WHERE account_id = $1",
                box.account_id,
                target,
            )
        async with cluster.shards[source].write() as conn:
            await conn.execute(
                "UPDATE mailbox_state SET moving_to = $2 WHERE account_id = $1",
                box.account_id,
                target,
            )
        write = asyncio.create_task(store.store_messages([mail(box)]))
        await asyncio.sleep(0.3)
        assert not write.done()  # waiting, not refused, not written on the old shard
        report = await move_account(cluster, box.account_id, target, settle_seconds=TTL)
        (stored,) = await asyncio.wait_for(write, 5)
        assert report.target == target
        assert (await store.get_message(box.account_id, stored)) is not None
        shard_urls = {"shard0": urls[1], "shard1": urls[2]}
        assert (await _rows(shard_urls[target], box.account_id))["messages"] == 1
        assert await _rows(shard_urls[source], box.account_id) == {}
    finally:
        await store.close()


async def test_an_accounts_bayes_statistics_move_with_it(urls: list[str]) -> None:
    """Its counts and its messages' marks go to the new shard; a training
    after the move lands there and still counts each message once. The old
    shard's global keeps what the account added to it (decision 0022)."""
    cluster = _cluster(urls)
    store = PgMailboxStore(cluster)
    bayes = PgBayesStore(store)
    await store.open()
    await bayes.open()
    try:
        box = await new_box(store)
        first, second = await store.store_messages([mail(box), mail(box)])
        await bayes.train(box.account_id, [Training(first, "spam", ("rolex", "cheap"))])
        source = await cluster.shard_name(box.account_id)
        target = "shard1" if source == "shard0" else "shard0"
        await move_account(cluster, box.account_id, target, settle_seconds=TTL)
        shard_urls = {"shard0": urls[1], "shard1": urls[2]}
        moved = await _rows(shard_urls[target], box.account_id)
        assert (moved["bayes_totals"], moved["bayes_tokens"]) == (1, 2)
        assert await _rows(shard_urls[source], box.account_id) == {}
        # Taught as spam before the move: a second time counts nothing.
        again = [Training(first, "spam", ("rolex", "cheap")), Training(second, "ham", ("lunch",))]
        assert await bayes.train(box.account_id, again) == ["spam", None]
        stats = await bayes.statistics(box.account_id, ["rolex", "lunch"])
        assert stats.account == TokenCounts(1, 1)
        assert stats.account_tokens == {"rolex": TokenCounts(1, 0), "lunch": TokenCounts(0, 1)}
        # The new shard's global has only what was trained there.
        assert stats.global_tokens == {"lunch": TokenCounts(0, 1)}
    finally:
        await bayes.close()
        await store.close()


def _write_config(path: Path, directory: str, shard0: str, shard1: str) -> Path:
    path.write_text(
        "[storage]\n"
        f'metadata_url = "{directory}"\n'
        "[[storage.metadata_shards]]\n"
        f'name = "shard0"\nurl = "{shard0}"\n'
        "[[storage.metadata_shards]]\n"
        f'name = "shard1"\nurl = "{shard1}"\n'
    )
    return path


def test_db_upgrade_migrates_the_directory_and_every_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run() -> None:
        async with empty_database() as directory, empty_database() as s0, empty_database() as s1:
            config = _write_config(tmp_path / "fleet.toml", directory, s0, s1)
            common = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
            # ``main`` runs its own event loop: off this one.
            assert await asyncio.to_thread(main, ["db", "status", *common]) == 1
            assert await asyncio.to_thread(main, ["db", "upgrade", *common]) == 0
            out = capsys.readouterr().out
            for url in (directory, s0, s1):
                assert f"{url}: none -> " in out
            assert await asyncio.to_thread(main, ["db", "status", *common]) == 0
            assert capsys.readouterr().out.count("up to date") == 3

    asyncio.run(run())


def test_account_move_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI end to end: a placed account, moved by name."""

    async def run() -> None:
        async with fresh_databases(3) as (directory, s0, s1):
            config = _write_config(tmp_path / "fleet.toml", directory, s0, s1)
            cluster = PgCluster(directory, [ShardConfig("shard0", s0), ShardConfig("shard1", s1)])
            store = PgMailboxStore(cluster)
            await store.open()
            account_id = new_id()
            try:
                box = await new_box(store)
                account_id = box.account_id
                await store.store_messages([mail(box)])
                async with cluster.directory.write() as conn:
                    await conn.execute(
                        "INSERT INTO accounts (id, email, name, password_hash, disabled,"
                        " created_at) VALUES ($1, 'mover@example.test', '', 'x', false, 0)",
                        account_id,
                    )
                source = await cluster.shard_name(account_id)
            finally:
                await store.close()
            target = "shard1" if source == "shard0" else "shard0"
            common = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
            move = ["account", "move", "mover@example.test", "--to", target, *common]
            assert await asyncio.to_thread(main, move) == 0
            assert f"{source} -> {target}, 1 messages" in capsys.readouterr().out
            assert await _rows({"shard0": s0, "shard1": s1}[source], account_id) == {}
            assert await asyncio.to_thread(main, move) == 0
            assert "already" in capsys.readouterr().out

    asyncio.run(run())


async def test_the_service_runs_on_sharded_postgresql(
    urls: list[str], start_service: StartService
) -> None:
    """Sign-up, send, SMTP-free local delivery, listing and search over HTTP
    with the metadata on a directory database and two shards."""
    directory, shard0, shard1 = urls
    service = await start_service(
        {
            "storage": {
                "metadata_url": directory,
                "metadata_shards": [
                    {"name": "shard0", "url": shard0},
                    {"name": "shard1", "url": shard1},
                ],
            }
        }
    )
    alice = await service.user("alice")
    bob = await service.user("bob")
    await alice.send(to=["bob@" + DOMAIN], subject="Quarterly budget 회의를", body="numbers")
    await bob.send(to=["alice@" + DOMAIN], subject="Re: Quarterly budget", body="thanks")
    assert [m["subject"] for m in await bob.wait_for("inbox", 1)] == ["Quarterly budget 회의를"]
    assert [m["subject"] for m in await alice.wait_for("inbox", 1)] == ["Re: Quarterly budget"]
    response = await bob.client.get("/v1/search", params={"q": "회의"})
    assert response.status_code == 200, response.text
    assert [m["subject"] for m in response.json()["items"]] == ["Quarterly budget 회의를"]
    conn = await asyncpg.connect(asyncpg_dsn(directory))
    try:
        shards = {r[0] for r in await conn.fetch("SELECT shard FROM placements")}
    finally:
        await conn.close()
    assert shards == {"shard0", "shard1"}
