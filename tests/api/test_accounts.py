"""Sign-up, login, logout and the token rules (API.md "Accounts and sessions")."""

from __future__ import annotations

import pytest

from tests.conftest import DOMAIN, PASSWORD, Service


async def test_sign_up_log_in_me_log_out(service: Service) -> None:
    client = service.client()
    created = await client.post(
        "/v1/accounts",
        json={"email": f"Carol@{DOMAIN}", "password": PASSWORD, "name": "Carol C"},
    )
    assert created.status_code == 201
    account = created.json()
    assert account["email"] == f"carol@{DOMAIN}"
    assert account["name"] == "Carol C"
    assert set(account) == {"id", "email", "name"}

    login = await client.post(
        "/v1/sessions", json={"email": f"carol@{DOMAIN}", "password": PASSWORD}
    )
    assert login.status_code == 201
    token = login.json()["token"]
    assert login.json()["expires_at"].endswith("Z")

    authed = service.client(token)
    me = await authed.get("/v1/me")
    assert me.status_code == 200
    assert me.json() == account

    assert (await authed.delete("/v1/sessions/current")).status_code == 204
    after = await authed.get("/v1/me")
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "invalid_token"


async def test_every_account_gets_the_rfc6154_folders(service: Service) -> None:
    user = await service.user("dave")
    folders = (await user.client.get("/v1/folders")).json()
    assert [(f["name"], f["role"]) for f in folders] == [
        ("Inbox", "inbox"),
        ("Sent", "sent"),
        ("Drafts", "drafts"),
        ("Junk", "junk"),
        ("Trash", "trash"),
        ("Archive", "archive"),
    ]
    assert all(f["user_id"] == user.id and f["total"] == 0 and f["unread"] == 0 for f in folders)


async def test_wrong_password_and_unknown_address_look_the_same(service: Service) -> None:
    await service.user("erin")
    client = service.client()
    wrong = await client.post(
        "/v1/sessions", json={"email": f"erin@{DOMAIN}", "password": "nope nope"}
    )
    unknown = await client.post(
        "/v1/sessions", json={"email": f"nobody@{DOMAIN}", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_duplicate_address_is_409_whatever_the_case(service: Service) -> None:
    await service.user("frank")
    again = await service.client().post(
        "/v1/accounts", json={"email": f"FRANK@{DOMAIN}", "password": PASSWORD, "name": "F"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "address_taken"


@pytest.mark.parametrize(
    ("email", "status", "code"),
    [
        ("x@not-hosted.org", 422, "unknown_domain"),
        ("not an address", 422, "invalid_address"),
        (f"a..b@{DOMAIN}", 422, "invalid_address"),
    ],
)
async def test_sign_up_refused(service: Service, email: str, status: int, code: str) -> None:
    response = await service.client().post(
        "/v1/accounts", json={"email": email, "password": PASSWORD, "name": "X"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_sign_up_only_on_domains_open_for_it(service: Service) -> None:
    await service.runtime.accounts.add_domain("closed.example", open_signup=False)
    response = await service.client().post(
        "/v1/accounts", json={"email": "x@closed.example", "password": PASSWORD, "name": "X"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "signup_closed"


async def test_short_password_refused(service: Service) -> None:
    response = await service.client().post(
        "/v1/accounts", json={"email": f"gina@{DOMAIN}", "password": "short", "name": "G"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "weak_password"


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer garbage", "Basic abc", "Bearer 123.AAAA", "Bearer x.y"]
)
async def test_missing_or_bad_token_is_401(service: Service, header: str | None) -> None:
    client = service.client()
    headers = {"Authorization": header} if header else {}
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"missing_token", "invalid_token"}


async def test_disabled_account_loses_its_sessions(service: Service) -> None:
    user = await service.user("henry")
    await service.runtime.accounts.set_disabled(user.email, True)
    assert (await user.client.get("/v1/me")).status_code == 401
    login = await service.client().post(
        "/v1/sessions", json={"email": user.email, "password": PASSWORD}
    )
    assert login.status_code == 401


async def test_readyz_says_which_backend_is_down(service: Service) -> None:
    await service.runtime.stores.events.close()
    ready = await service.client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["events"].startswith("down")
    assert ready.json()["checks"]["mailbox"] == "ok"


async def test_password_is_stored_as_argon2id(service: Service) -> None:
    user = await service.user("ivy")
    account = await service.runtime.stores.directory.get_account(int(user.id))
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash


async def test_health_and_openapi(service: Service) -> None:
    client = service.client()
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    # Every storage role the process uses is checked.
    assert set(ready.json()["checks"]) == {
        "directory",
        "mailbox",
        "search",
        "bayes",
        "blobs",
        "queue",
        "cache",
        "events",
    }
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/accounts",
        "/v1/sessions",
        "/v1/folders/{folder_id}/messages",
        "/v1/messages",
    ):
        assert path in spec["paths"]
