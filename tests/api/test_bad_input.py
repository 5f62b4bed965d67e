"""Bad input gets a clear JSON error and leaves nothing half-stored."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Service, StartService, User


async def _nothing_stored(service: Service, sender: User, recipient: User) -> None:
    assert await sender.messages("sent") == []
    assert await recipient.messages("inbox") == []
    for folder in (await sender.client.get("/v1/folders")).json():
        assert folder["total"] == 0
    assert await service.runtime.stores.queue.list("outgoing") == []


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


async def test_malformed_json(service: Service, alice: User, bob: User) -> None:
    for raw in (b'{"to": ["bob@example.com"', b"not json", b"\xff\xfe", b"[]", b""):
        response = await alice.client.post(
            "/v1/messages", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["error"]["code"] in {"malformed_json", "invalid_field"}
    _error(
        await service.client().post(
            "/v1/accounts", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
        "malformed_json",
    )
    await _nothing_stored(service, alice, bob)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"to": ["bob@example.com"]}, "missing_field"),
        ({"subject": "no recipients field"}, "no_recipients"),
        ({"to": [], "subject": "empty"}, "no_recipients"),
        ({"to": "bob@example.com", "subject": "not a list"}, "invalid_field"),
        ({"to": ["bob@example.com"], "subject": "x", "colour": "red"}, "unknown_field"),
        ({"to": ["bob@example.com"], "subject": 5}, "invalid_field"),
    ],
)
async def test_missing_or_wrong_fields(
    service: Service, alice: User, bob: User, body: dict[str, object], code: str
) -> None:
    response = await alice.client.post("/v1/messages", json=body)
    _error(response, 422 if code == "no_recipients" else 400, code)
    await _nothing_stored(service, alice, bob)


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "two@@example.com",
        "spaces in@example.com",
        "bob@example",
        "@a,@b:user@evil.example",
        '"quoted"@example.com',
        "bob@exa_mple.com",
        {"email": "bob@example.com", "name": "line\r\nBcc: evil@example.net"},
        {"name": "no email"},
        42,
    ],
)
async def test_invalid_address(service: Service, alice: User, bob: User, address: object) -> None:
    response = await alice.client.post(
        "/v1/messages", json={"to": [bob.email], "cc": [address], "subject": "x"}
    )
    assert response.status_code in {400, 422}, response.text
    assert response.json()["error"]["code"] in {"invalid_address", "invalid_field"}
    await _nothing_stored(service, alice, bob)


async def test_unknown_local_recipient(service: Service, alice: User, bob: User) -> None:
    response = await alice.client.post(
        "/v1/messages", json={"to": [bob.email, "nobody@example.com"], "subject": "x"}
    )
    _error(response, 422, "unknown_recipient")
    assert "nobody@example.com" in response.json()["error"]["message"]
    await _nothing_stored(service, alice, bob)


async def test_unknown_attachment_id(service: Service, alice: User, bob: User) -> None:
    upload = await alice.upload("a.txt", b"a", "text/plain")
    before = await service.stored_blobs()
    for bad in ("999999999", "not-an-id", "-1", ""):
        response = await alice.client.post(
            "/v1/messages",
            json={"to": [bob.email], "subject": "x", "attachments": [upload["id"], bad]},
        )
        _error(response, 422, "unknown_attachment")
    assert await service.stored_blobs() == before
    await _nothing_stored(service, alice, bob)


async def test_too_many_recipients(start_service: StartService) -> None:
    service = await start_service({"limits": {"max_recipients": 3}})
    alice, bob = await service.user("alice"), await service.user("bob")
    response = await alice.client.post(
        "/v1/messages",
        json={
            "to": [bob.email, "a@remote.example"],
            "cc": ["b@remote.example"],
            "bcc": ["c@remote.example"],
            "subject": "x",
        },
    )
    _error(response, 422, "too_many_recipients")
    await _nothing_stored(service, alice, bob)
    # Exactly the limit is fine.
    ok = await alice.client.post(
        "/v1/messages",
        json={
            "to": [bob.email],
            "cc": ["b@remote.example"],
            "bcc": ["c@x.example"],
            "subject": "x",
        },
    )
    assert ok.status_code == 202


async def test_oversize_attachment_is_413_and_leaves_nothing(start_service: StartService) -> None:
    limit = 100_000
    service = await start_service({"limits": {"max_attachment_bytes": limit}})
    alice = await service.user("alice")
    before = await service.stored_blobs()

    exact = await alice.upload("exact.bin", b"x" * limit, "application/octet-stream")
    assert exact["size"] == limit

    over = await alice.client.post(
        "/v1/attachments", files={"file": ("big.bin", b"y" * (limit + 1), "application/zip")}
    )
    _error(over, 413, "attachment_too_large")

    # Far over: refused from the declared length, before the body is read.
    huge = await alice.client.post(
        "/v1/attachments",
        files={"file": ("huge.bin", b"z" * (limit * 4), "application/zip")},
    )
    _error(huge, 413, "attachment_too_large")

    after = await service.stored_blobs()
    added = after.keys() - before.keys()
    assert len(added) == 1, added  # only the accepted upload, no leftovers
    assert after[added.pop()] == limit


async def test_whole_message_over_the_limit_is_413(start_service: StartService) -> None:
    service = await start_service(
        {"limits": {"max_attachment_bytes": 60_000, "max_message_bytes": 100_000}}
    )
    alice, bob = await service.user("alice"), await service.user("bob")
    one = await alice.upload("one.bin", b"1" * 50_000, "application/octet-stream")
    two = await alice.upload("two.bin", b"2" * 50_000, "application/octet-stream")
    response = await alice.client.post(
        "/v1/messages",
        json={"to": [bob.email], "subject": "x", "attachments": [one["id"], two["id"]]},
    )
    _error(response, 413, "message_too_large")
    await _nothing_stored(service, alice, bob)


async def test_upload_without_a_file_field(alice: User) -> None:
    _error(await alice.client.post("/v1/attachments", data={"other": "x"}), 400, "no_file")
    _error(await alice.client.post("/v1/attachments", json={"file": "x"}), 400, "no_file")


async def test_send_rate_limit_answers_429_with_retry_after(start_service: StartService) -> None:
    service = await start_service({"limits": {"send_per_minute": 3}})
    alice, bob = await service.user("alice"), await service.user("bob")
    for _ in range(3):
        await alice.send(to=[bob.email])
    limited = await alice.client.post("/v1/messages", json={"to": [bob.email], "subject": "x"})
    _error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert len(await bob.messages("inbox")) == 3
    # Limits are per account: Bob may still send.
    await bob.send(to=[alice.email])


async def test_unknown_routes_and_methods_are_json(service: Service, alice: User) -> None:
    _error(await alice.client.get("/v1/nothing-here"), 404, "not_found")
    _error(await alice.client.put("/v1/folders"), 405, "method_not_allowed")
    _error(await alice.client.get("/v1/messages/not-a-number"), 404, "message_not_found")
    _error(
        await alice.client.get("/v1/folders/99999999999999999999/messages"), 404, "folder_not_found"
    )
