"""Every route scoped by the caller's account: another account's ids (its
messages, folders, attachments, uploads, threads), alone or mixed with the
caller's own, get exactly what an id that never existed gets (404, or the
same 422), never the other account's content, and change nothing of either
account.

``ROUTES`` says how to call each route that takes an id; ``NO_IDS`` why the
others take none. Their union must be every route of the application
(tests/api/app_routes.py): a route added later fails
``test_every_route_is_in_the_table`` until it is covered here."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.app_routes import app_routes
from tests.conftest import Service, User

# In every name, subject, body and file of the other account: an answer to
# the caller that holds it leaked.
MARK = "zq7hidden"
NEVER_ID = "4611686018427387000"  # well-formed, and no id of anything

Request = tuple[str, str, dict[str, Any] | None]


@dataclass(frozen=True)
class Call:
    """A route's id slots (name, the kinds of id it takes) and how to make
    the request from one id per slot and a flag."""

    slots: tuple[tuple[str, tuple[str, ...]], ...]
    build: Callable[[dict[str, str], bool], Request]


def _send(ids: dict[str, str], flag: bool) -> Request:
    body: dict[str, Any] = {"to": ["alice@example.com"], "subject": "x", "body": "y"}
    body["attachments"] = [ids["attachment"]]
    if flag:
        body["in_reply_to"] = ids["in_reply_to"]
    return "POST", "/v1/messages", body


ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/v1/messages/{message_id}"): Call(
        (("m", ("message",)),), lambda i, f: ("GET", f"/v1/messages/{i['m']}", None)
    ),
    ("GET", "/v1/messages/{message_id}/raw"): Call(
        (("m", ("message",)),), lambda i, f: ("GET", f"/v1/messages/{i['m']}/raw", None)
    ),
    ("GET", "/v1/messages/{message_id}/attachments/{attachment_id}"): Call(
        (("m", ("message",)), ("a", ("attachment",))),
        lambda i, f: ("GET", f"/v1/messages/{i['m']}/attachments/{i['a']}", None),
    ),
    ("PATCH", "/v1/messages/{message_id}"): Call(
        (("m", ("message",)), ("folder", ("folder",))),
        lambda i, f: (
            "PATCH",
            f"/v1/messages/{i['m']}",
            {"is_read": True, "is_flagged": f, "folder_id": i["folder"]},
        ),
    ),
    ("DELETE", "/v1/messages/{message_id}"): Call(
        (("m", ("message",)),), lambda i, f: ("DELETE", f"/v1/messages/{i['m']}", None)
    ),
    ("POST", "/v1/messages"): Call(
        (("attachment", ("upload", "attachment")), ("in_reply_to", ("message",))), _send
    ),
    ("PATCH", "/v1/folders/{folder_id}"): Call(
        (("folder", ("folder",)),),
        lambda i, f: ("PATCH", f"/v1/folders/{i['folder']}", {"name": "Taken over"}),
    ),
    ("DELETE", "/v1/folders/{folder_id}"): Call(
        (("folder", ("folder",)),), lambda i, f: ("DELETE", f"/v1/folders/{i['folder']}", None)
    ),
    ("GET", "/v1/folders/{folder_id}/messages"): Call(
        (("folder", ("folder",)),),
        lambda i, f: (
            "GET",
            f"/v1/folders/{i['folder']}/messages" + ("?group=thread&is_read=false" if f else ""),
            None,
        ),
    ),
    ("GET", "/v1/threads/{thread_id}"): Call(
        (("t", ("thread",)),), lambda i, f: ("GET", f"/v1/threads/{i['t']}", None)
    ),
}

NO_IDS = {
    ("POST", "/v1/accounts"): "sign-up: no account yet",
    ("POST", "/v1/sessions"): "login: an address and a password, throttled (test_hostile_input)",
    ("DELETE", "/v1/sessions/current"): "the caller's own token",
    ("GET", "/v1/me"): "the caller itself (checked below)",
    ("GET", "/v1/folders"): "the caller's folders (checked below)",
    ("POST", "/v1/folders"): "a name only",
    ("POST", "/v1/attachments"): "a file only",
    ("GET", "/v1/search"): "free text (checked below: another account's words find nothing)",
    ("GET", "/v1/contacts"): "a prefix (checked below)",
    ("GET", "/v1/limits"): "the server's limits",
    ("GET", "/v1/events"): "a cursor is a position in the caller's own log (checked below)",
    ("WEBSOCKET", "/v1/events/ws"): "as GET /v1/events",
    ("GET", "/healthz"): "no account",
    ("GET", "/readyz"): "no account",
    ("GET", "/metrics"): "no account: the operators' counters, loopback only (decision 0028)",
    ("GET", "/"): "the webmail's static page",
    ("GET", "/assets/{name:path}"): "the webmail's static files",
    ("GET", "/openapi.json"): "the API's description",
    ("GET", "/docs"): "the API's description",
    ("GET", "/docs/oauth2-redirect"): "the API's description",
    ("GET", "/redoc"): "the API's description",
}


class World:
    """Alice (the caller) and Bob (the other account), each with a message
    carrying an attachment, a thread, a folder of their own and an upload."""

    def __init__(self, service: Service, alice: User, bob: User) -> None:
        self.service = service
        self.alice = alice
        self.bob = bob
        self.own: dict[str, list[str]] = {}
        self.theirs: dict[str, list[str]] = {}

    @staticmethod
    async def ids_of(user: User, upload: dict[str, Any]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {"message": [], "attachment": [], "thread": []}
        for role in ("inbox", "sent"):
            for summary in await user.messages(role):
                full = (await user.client.get(f"/v1/messages/{summary['id']}")).json()
                ids["message"].append(full["id"])
                ids["thread"].append(full["thread_id"])
                ids["attachment"] += [a["id"] for a in full["attachments"]]
        folders = (await user.client.get("/v1/folders")).json()
        ids["folder"] = [f["id"] for f in folders if f["role"] in (None, "inbox", "trash")]
        ids["upload"] = [upload["id"]]
        return {kind: sorted(set(values)) for kind, values in ids.items()}


async def settled(service: Service) -> None:
    """Until mail sent earlier (an example that sent with only its own ids)
    has been delivered: a delivery landing between two snapshots is not a
    change the call made."""
    queue = service.runtime.stores.queue
    for _ in range(600):
        depths = [(await queue.stats(name)).depth for name in ("incoming", "outgoing")]
        if not any(depths):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"mail still queued after 30 s: {depths}")


async def snapshot(user: User) -> str:
    """Everything the account holds, as one digest-able text."""
    parts = []
    for folder in sorted((await user.client.get("/v1/folders")).json(), key=lambda f: f["id"]):
        parts.append(repr(sorted(folder.items())))
        page = await user.client.get(f"/v1/folders/{folder['id']}/messages")
        for summary in page.json()["items"]:
            full = (await user.client.get(f"/v1/messages/{summary['id']}")).json()
            parts.append(repr(sorted(full.items())))
            for attachment in full["attachments"]:
                data = await user.client.get(
                    f"/v1/messages/{summary['id']}/attachments/{attachment['id']}"
                )
                parts.append(hashlib.sha256(data.content).hexdigest())
    return "\n".join(parts)


@pytest.fixture
async def world(service: Service, alice: User, bob: User) -> World:
    carol = await service.user("carol")
    secret = await carol.upload(f"{MARK}.txt", f"carol's {MARK} file".encode(), "text/plain")
    await carol.send(
        to=[bob.email], subject=f"for bob {MARK}", body=f"{MARK} body", attachments=[secret["id"]]
    )
    (received,) = await bob.wait_for("inbox", 1)
    await bob.send(to=[carol.email], subject=f"re {MARK}", body=MARK, in_reply_to=received["id"])
    assert (await bob.client.post("/v1/folders", json={"name": f"Private {MARK}"})).is_success
    bob_upload = await bob.upload(f"draft {MARK}.txt", MARK.encode(), "text/plain")

    own_file = await alice.upload("own.txt", b"alice's own", "text/plain")
    await alice.send(to=[alice.email], subject="alice's own", attachments=[own_file["id"]])
    await alice.wait_for("inbox", 1)
    assert (await alice.client.post("/v1/folders", json={"name": "Alice's"})).is_success
    alice_upload = await alice.upload("unsent.txt", b"not yet", "text/plain")

    found = World(service, alice, bob)
    found.own = await World.ids_of(alice, alice_upload)
    found.theirs = await World.ids_of(bob, bob_upload)
    for kind, values in found.theirs.items():
        assert values and not set(values) & set(found.own[kind]), kind
    return found


async def attempt(world: World, call: Call, choice: dict[str, tuple[str, int]], flag: bool) -> None:
    """Calls the route as Alice with ``choice`` (slot: (whose, index)), and
    again with Bob's ids replaced by one that never existed; the answers
    must agree, show nothing of Bob's, and change nothing."""

    def ids(theirs_as_never: bool) -> dict[str, str]:
        picked = {}
        for name, kinds in call.slots:
            whose, n = choice[name]
            pool = [v for k in kinds for v in (world.own if whose == "own" else world.theirs)[k]]
            if whose == "never" or (whose == "theirs" and theirs_as_never):
                picked[name] = NEVER_ID
            else:
                picked[name] = pool[n % len(pool)]
        return picked

    async def send(request: Request) -> httpx.Response:
        method, url, body = request
        return await world.alice.client.request(method, url, json=body)

    await settled(world.service)
    before = (await snapshot(world.bob), await snapshot(world.alice))
    theirs = await send(call.build(ids(False), flag))
    never = await send(call.build(ids(True), flag))
    where = (call.build(ids(False), flag), theirs.text)
    assert theirs.status_code >= 400, where
    assert theirs.status_code == never.status_code, (where, never.text)
    assert theirs.json()["error"]["code"] == never.json()["error"]["code"], (where, never.text)
    assert set(theirs.json()["error"]) == {"code", "message"}
    assert MARK not in theirs.text, where
    if call.build(ids(False), flag)[0] != "GET":
        assert (await snapshot(world.bob), await snapshot(world.alice)) == before, where


def choices(call: Call) -> st.SearchStrategy[dict[str, tuple[str, int]]]:
    """One id per slot: the caller's own, the other account's or never one,
    at least one the other account's."""
    slot = st.tuples(st.sampled_from(["own", "theirs", "never"]), st.integers(0, 5))
    names = [name for name, _ in call.slots]
    return st.fixed_dictionaries({n: slot for n in names}).filter(
        lambda c: any(whose == "theirs" for whose, _ in c.values())
    )


async def test_every_route_is_in_the_table(service: Service) -> None:
    routes = app_routes(service.runtime)
    assert not set(ROUTES) & set(NO_IDS)
    missing = routes - set(ROUTES) - set(NO_IDS)
    assert not missing, f"routes that test_isolation does not call yet: {sorted(missing)}"
    gone = (set(ROUTES) | set(NO_IDS)) - routes
    assert not gone, f"routes in the table that the application no longer has: {sorted(gone)}"


async def test_every_route_answers_another_accounts_ids_as_never_existing(world: World) -> None:
    # Each route once with every slot the other account's, and once with each
    # slot alone the other's (the rest the caller's own).
    for call in ROUTES.values():
        names = [name for name, _ in call.slots]
        await attempt(world, call, {n: ("theirs", 0) for n in names}, True)
        for alone in names if len(names) > 1 else ():
            mixed = {n: ("theirs" if n == alone else "own", 0) for n in names}
            await attempt(world, call, mixed, True)

    # The routes without ids show the caller nothing of the other account.
    alice = world.alice.client
    for url in ("/v1/me", "/v1/folders", f"/v1/search?q={MARK}", "/v1/contacts?q=carol"):
        response = await alice.get(url)
        assert response.status_code == 200 and MARK not in response.text, url
        assert "carol" not in response.text, url
    assert (await alice.get(f"/v1/search?q={MARK}")).json()["items"] == []
    events = await alice.get("/v1/events", params={"cursor": "0", "timeout": 0})
    theirs = {v for values in world.theirs.values() for v in values}
    assert not any(e["data"].get("id") in theirs for e in events.json()["events"])


@pytest.mark.embedded_only(
    "the property is about the routes, above the storage interfaces; on the distributed"
    " profile the route-by-route test covers every route, and 25 examples of full-account"
    " snapshots take minutes there"
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_mix_of_ids_answers_as_never_existing(world: World, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(ROUTES)), label="route")
    call = ROUTES[key]
    choice = data.draw(choices(call), label="ids")
    flag = data.draw(st.booleans(), label="flag")
    await attempt(world, call, choice, flag)
