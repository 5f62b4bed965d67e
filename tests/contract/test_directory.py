"""DirectoryStore contract: domains, DKIM keys, accounts by address, sessions;
taken keys raise DuplicateKey; a session is found only with its own account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfleet.ids import new_id
from mailfleet.storage.errors import DuplicateKey
from mailfleet.storage.interfaces import Account, DirectoryStore, DkimKey, Domain, Session

from . import backends


@pytest.fixture(params=backends.params("directory"))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DirectoryStore]:
    async with request.param.open(tmp_path) as opened:
        yield opened


def account(email: str) -> Account:
    return Account(new_id(), email, "Someone", "hash", False, 1)


async def test_domains(store: DirectoryStore) -> None:
    await store.add_domain(Domain("example.com", False, 1))
    await store.add_domain(Domain("a.example", True, 2))
    with pytest.raises(DuplicateKey):
        await store.add_domain(Domain("example.com", True, 3))
    assert [d.name for d in await store.list_domains()] == ["a.example", "example.com"]
    await store.set_domain_signup("example.com", True)
    assert await store.get_domain("example.com") == Domain("example.com", True, 1)
    assert await store.get_domain("nowhere.example") is None


async def test_dkim_keys_newest_first(store: DirectoryStore) -> None:
    await store.add_dkim_key(DkimKey("example.com", "old", b"k1", 1))
    await store.add_dkim_key(DkimKey("example.com", "new", b"k2", 2))
    await store.add_dkim_key(DkimKey("other.example", "new", b"k3", 3))
    with pytest.raises(DuplicateKey):
        await store.add_dkim_key(DkimKey("example.com", "old", b"k4", 4))
    assert [k.selector for k in await store.dkim_keys("example.com")] == ["new", "old"]
    assert await store.dkim_keys("none.example") == []


async def test_accounts_by_id_and_address(store: DirectoryStore) -> None:
    alice, bob = account("alice@example.com"), account("bob@ex_ample.com")
    await store.create_account(alice)
    await store.create_account(bob)
    with pytest.raises(DuplicateKey):
        await store.create_account(account("alice@example.com"))
    assert await store.get_account(alice.id) == alice
    assert await store.get_account_by_email("alice@example.com") == alice
    assert await store.get_account_by_email("carol@example.com") is None
    # The domain filter is a suffix match on "@domain", not a pattern.
    assert [a.email for a in await store.list_accounts("example.com")] == ["alice@example.com"]
    assert [a.email for a in await store.list_accounts("ex_ample.com")] == ["bob@ex_ample.com"]
    assert await store.list_accounts("xample.com") == []
    await store.update_account(alice.id, password_hash="new", disabled=True)
    changed = await store.get_account(alice.id)
    assert changed is not None and (changed.password_hash, changed.disabled) == ("new", True)
    assert await store.get_account(bob.id) == bob


async def test_a_hold_is_kept_with_its_reason_until_released(store: DirectoryStore) -> None:
    alice, bob = account("alice@example.com"), account("bob@example.com")
    for a in (alice, bob):
        await store.create_account(a)
    assert (alice.held_reason, alice.held_at) == (None, None)
    assert await store.set_hold(alice.id, "12 mails scored as spam within an hour")
    held = await store.get_account(alice.id)
    assert held is not None and held.held_reason == "12 mails scored as spam within an hour"
    assert held.held_at is not None and held.held_at > 0
    # A second hold keeps the first reason and time: the first is the story.
    assert not await store.set_hold(alice.id, "sent too fast")
    assert await store.get_account(alice.id) == held
    assert [a.held_reason for a in await store.list_accounts("example.com")] == [
        held.held_reason,
        None,
    ]
    assert await store.get_account(bob.id) == bob
    assert await store.set_hold(alice.id, None)
    assert not await store.set_hold(alice.id, None)
    released = await store.get_account(alice.id)
    assert released is not None and (released.held_reason, released.held_at) == (None, None)
    assert released.released_at is not None and released.released_at >= held.held_at
    assert not await store.set_hold(424242, "no such account")


async def test_sessions_belong_to_their_account(store: DirectoryStore) -> None:
    alice, bob = account("alice@example.com"), account("bob@example.com")
    for a in (alice, bob):
        await store.create_account(a)
    await store.create_session(Session(alice.id, b"t1", 10))
    await store.create_session(Session(alice.id, b"t2", 20))
    await store.create_session(Session(bob.id, b"t3", 30))
    assert await store.get_session(alice.id, b"t1") == Session(alice.id, b"t1", 10)
    assert await store.get_session(bob.id, b"t1") is None
    await store.delete_session(bob.id, b"t1")  # not bob's: nothing happens
    assert await store.get_session(alice.id, b"t1") is not None
    await store.delete_session(alice.id, b"t1")
    assert await store.get_session(alice.id, b"t1") is None
    await store.delete_sessions(alice.id)
    assert await store.get_session(alice.id, b"t2") is None
    assert await store.get_session(bob.id, b"t3") is not None
