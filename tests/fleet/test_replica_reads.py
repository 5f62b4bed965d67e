"""Issue 12 (decision 0016, "Reads"): on a shard with a streaming replica,
listings and search are read from the replica and may lag; a message read by
id, a change to it and the folder counts are read from the primary, so a user
sees their own writes at once.

Shown on the local fleet through the balancer, with WAL replay paused on
``shard2-replica`` (``pg_wal_replay_pause``) so the lag is as long as the test
wants and not a race: a mail that arrives meanwhile can be opened and flagged,
but the Inbox listing and search do not show it until replay resumes. The
API's page cache is keyed on the change head read from the replica too, so the
listing it serves stays the replica's and moves on when the replica does."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from mailfleet.localfleet import DATABASE, DOMAIN, Fleet, FleetState
from tests.fleet.acceptance import Account, http_url, sign_up

pytestmark = pytest.mark.fleet

# The replica replays within milliseconds on loopback; this is only the
# patience of the checks that wait for it.
CATCH_UP_SECONDS = 15
# HAProxy balances requests round-robin over the two api processes, each with
# a page cache of its own: enough requests that both answer several times.
REPEATS = 6


async def _pg(state: FleetState, cluster: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=state.ports[f"pg-{cluster}"], user="postgres", database=DATABASE
    )


async def _until(what: str, check: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """``check``'s first truthy answer, polled until ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def replay_paused(replica: asyncpg.Connection) -> AsyncIterator[None]:
    """WAL replay stopped on the replica for the block. Resumed whatever
    happens: every fleet test of the session shares this replica."""
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        # Requested is not yet paused: replay stops before its next record.
        await _until(
            "replay paused",
            lambda: replica.fetchval("SELECT pg_get_wal_replay_pause_state() = 'paused'"),
            CATCH_UP_SECONDS,
        )
        yield
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")


async def _signed_up_on(
    client: httpx.AsyncClient, directory: asyncpg.Connection, run: str, shard: str
) -> tuple[Account, int]:
    """An account the directory placed on ``shard``, and its id. Sign-up
    places each on the least-loaded of the two shards (ties by name); the
    fleet's accounts are all placed so, their loads differ by one at most,
    and a third sign-up at the latest lands on either shard."""
    for i in range(3):
        account = await sign_up(client, f"r{run}x{i}@{DOMAIN}")
        row = await directory.fetchrow(
            "SELECT p.shard, a.id FROM placements p JOIN accounts a ON a.id = p.account_id"
            " WHERE a.email = $1",
            account.email,
        )
        assert row is not None, account.email
        if row["shard"] == shard:
            return account, int(row["id"])
    raise AssertionError(f"three sign-ups, none placed on {shard}")


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _send(client: httpx.AsyncClient, sender: Account, to: Account, subject: str) -> None:
    sent = await client.post(
        "/v1/messages",
        json={"to": [to.email], "subject": subject, "body": f"{subject}, the body"},
        headers=_auth(sender),
    )
    assert sent.status_code == 202, sent.text


async def _replica_message_scans(replica: asyncpg.Connection) -> int:
    """Scans of the ``messages`` table on the replica's own statistics (a
    standby counts the reads it serves; only listings and search read that
    table there)."""
    await replica.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await replica.fetchval(
            "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)"
            " FROM pg_stat_user_tables WHERE relname = 'messages'"
        )
    )


@pytest.mark.timeout(180)
async def test_listing_and_search_lag_on_the_replica_while_the_message_itself_does_not(
    fleet: tuple[Fleet, FleetState],
) -> None:
    _, state = fleet
    run = secrets.token_hex(3)
    directory = await _pg(state, "directory")
    primary = await _pg(state, "shard2")
    replica = await _pg(state, "shard2-replica")
    try:
        async with httpx.AsyncClient(base_url=http_url(state), timeout=30) as client:
            sender = await sign_up(client, f"r{run}s@{DOMAIN}")
            reader, reader_id = await _signed_up_on(client, directory, run, "shard2")
            auth = _auth(reader)
            folders = await client.get("/v1/folders", headers=auth)
            assert folders.status_code == 200, folders.text
            inbox = next(f for f in folders.json() if f["role"] == "inbox")["id"]
            listing_url = f"/v1/folders/{inbox}/messages"

            async def listing(**params: Any) -> httpx.Response:
                page = await client.get(listing_url, params=params, headers=auth)
                assert page.status_code == 200, page.text
                return page

            async def listed_ids(**params: Any) -> list[str]:
                return [m["id"] for m in (await listing(**params)).json()["items"]]

            async def search(word: str) -> list[str]:
                hits = await client.get("/v1/search", params={"q": word}, headers=auth)
                assert hits.status_code == 200, hits.text
                return [m["id"] for m in hits.json()["items"]]

            # A first mail, listed once the running replica has replayed it:
            # the listing before the pause, which every api process caches.
            await _send(client, sender, reader, f"before {run}")
            before = await _until("the first mail listed", listed_ids, CATCH_UP_SECONDS)
            assert len(before) == 1, before
            for _ in range(REPEATS):
                assert await listed_ids() == before
            etag = (await listing()).headers["ETag"]
            start = await client.get("/v1/events", params={"timeout": 0}, headers=auth)
            assert start.status_code == 200, start.text
            cursor = start.json()["cursor"]

            async with replay_paused(replica):
                await _send(client, sender, reader, f"while paused {run} word{run}")

                # The client learns of it as a push would tell it: the
                # realtime feed reads the change log on the primary.
                async def arrived() -> str | None:
                    nonlocal cursor
                    polled = await client.get(
                        "/v1/events", params={"cursor": cursor, "timeout": 5}, headers=auth
                    )
                    assert polled.status_code == 200, polled.text
                    cursor = polled.json()["cursor"]
                    for event in polled.json()["events"]:
                        if event["type"] == "message.new":
                            assert event["data"]["folder_id"] == inbox, event
                            return str(event["data"]["id"])
                    return None

                new = await _until("the message.new event", arrived, CATCH_UP_SECONDS)
                assert new not in before

                # Counted before this test reads the table on the replica
                # itself (the operator's check below), or searches.
                scans = await _replica_message_scans(replica)

                # Read by id, changed, read again: the primary, so at once.
                opened = await client.get(f"/v1/messages/{new}", headers=auth)
                assert opened.status_code == 200, opened.text
                assert opened.json()["subject"] == f"while paused {run} word{run}"
                flagged = await client.patch(
                    f"/v1/messages/{new}", json={"is_flagged": True}, headers=auth
                )
                assert flagged.status_code == 200, flagged.text
                assert flagged.json()["is_flagged"] is True
                reopened = await client.get(f"/v1/messages/{new}", headers=auth)
                assert reopened.json()["is_flagged"] is True, reopened.text
                counts = await client.get("/v1/folders", headers=auth)
                inbox_now = next(f for f in counts.json() if f["role"] == "inbox")
                assert inbox_now["total"] == 2, inbox_now

                # Listings and search: the replica, which has not replayed it.
                # A page size never asked before misses the page cache, so
                # those are read from the store; the cached page agrees (same
                # head on the replica, same tag, same page).
                for i in range(REPEATS):
                    assert await listed_ids(limit=100 + i) == before
                    page = await listing()
                    assert [m["id"] for m in page.json()["items"]] == before
                    assert page.headers["ETag"] == etag
                    again = await client.get(listing_url, headers={**auth, "If-None-Match": etag})
                    assert again.status_code == 304, again.text
                    threads = await listed_ids(group="thread", limit=100 + i)
                    assert new not in threads, threads

                # The replica itself served them: its own statistics count
                # the scans (each backend flushes them within a second or so).
                sizes = itertools.count()

                async def scanned() -> bool:
                    await listing(limit=1 + next(sizes) % 200)
                    return await _replica_message_scans(replica) > scans

                await _until("listings counted on the replica", scanned, CATCH_UP_SECONDS)
                for _ in range(REPEATS):
                    assert await search(f"word{run}") == []

                # The operator's view: on the shard's primary, not yet on its replica.
                count = "SELECT count(*) FROM messages WHERE account_id = $1 AND id = $2"
                assert await primary.fetchval(count, reader_id, int(new)) == 1
                assert await replica.fetchval(count, reader_id, int(new)) == 0

            # Replay resumed: the listing catches up, with the flag set while
            # it lagged, on every api process (a page cached at the old head
            # is not served again), and search finds the mail.
            async def caught_up() -> bool:
                for _ in range(REPEATS):
                    page = await listing()
                    items = {m["id"]: m for m in page.json()["items"]}
                    if new not in items:
                        return False
                    assert items[new]["is_flagged"] is True, items[new]
                    assert set(items) == {new, *before}, items
                    assert page.headers["ETag"] != etag
                return True

            await _until("the new mail listed after replay resumed", caught_up, CATCH_UP_SECONDS)
            stale = await client.get(listing_url, headers={**auth, "If-None-Match": etag})
            assert stale.status_code == 200, stale.text
            assert new in await listed_ids(group="thread")
            assert await _until("the new mail found", lambda: search(f"word{run}"), 5) == [new]
    finally:
        for conn in (directory, primary, replica):
            await conn.close()
