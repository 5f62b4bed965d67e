"""Every route scoped by the caller's account: another account's ids answer
404 (or the same error as an id that never existed), never their content."""

from __future__ import annotations

from tests.conftest import Service, User


async def test_every_route_hides_another_accounts_resources(
    service: Service, alice: User, bob: User
) -> None:
    carol = await service.user("carol")
    upload = await carol.upload("secret.txt", b"carol's secret", "text/plain")
    await carol.send(to=[bob.email], subject="for bob", attachments=[upload["id"]])
    (bob_message,) = await bob.messages("inbox")
    bob_full = (await bob.client.get(f"/v1/messages/{bob_message['id']}")).json()
    bob_attachment = bob_full["attachments"][0]["id"]
    bob_folder = (await bob.client.post("/v1/folders", json={"name": "Private"})).json()
    bob_inbox = await bob.folder("inbox")

    await alice.send(to=[alice.email], subject="alice's own")
    (alice_message,) = await alice.messages("inbox")

    m, f = bob_message["id"], bob_folder["id"]
    attempts = [
        ("GET", f"/v1/messages/{m}", None),
        ("GET", f"/v1/messages/{m}/raw", None),
        ("GET", f"/v1/messages/{m}/attachments/{bob_attachment}", None),
        ("PATCH", f"/v1/messages/{m}", {"is_read": True}),
        ("PATCH", f"/v1/messages/{m}", {"folder_id": f}),
        ("DELETE", f"/v1/messages/{m}", None),
        ("GET", f"/v1/folders/{bob_inbox['id']}/messages", None),
        ("GET", f"/v1/folders/{f}/messages", None),
        ("PATCH", f"/v1/folders/{f}", {"name": "Mine now"}),
        ("DELETE", f"/v1/folders/{f}", None),
        # Alice's own message, moved into Bob's folder.
        ("PATCH", f"/v1/messages/{alice_message['id']}", {"folder_id": f}),
        # Alice's own message, with Bob's attachment id.
        ("GET", f"/v1/messages/{alice_message['id']}/attachments/{bob_attachment}", None),
    ]
    for method, path, body in attempts:
        response = await alice.client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert set(response.json()["error"]) == {"code", "message"}
        assert "secret" not in response.text and "for bob" not in response.text

    # Ids inside a request body: the same answer as for an id that never existed.
    for field, value in (("attachments", [upload["id"]]), ("in_reply_to", m)):
        theirs = await alice.client.post(
            "/v1/messages", json={"to": [alice.email], "subject": "x", field: value}
        )
        never = await alice.client.post(
            "/v1/messages",
            json={
                "to": [alice.email],
                "subject": "x",
                field: ["123456789"] if field == "attachments" else "123456789",
            },
        )
        assert theirs.status_code == never.status_code == 422
        assert theirs.json()["error"]["code"] == never.json()["error"]["code"]

    # Nothing of Bob's changed.
    after = (await bob.client.get(f"/v1/messages/{m}")).json()
    assert after["is_read"] is False
    assert after["folder_id"] == bob_inbox["id"]
    names = [f["name"] for f in (await bob.client.get("/v1/folders")).json()]
    assert "Private" in names
    assert (await alice.messages("inbox"))[0]["id"] == alice_message["id"]


async def test_folder_list_shows_only_own_folders(alice: User, bob: User) -> None:
    await bob.client.post("/v1/folders", json={"name": "Bob only"})
    alice_folders = (await alice.client.get("/v1/folders")).json()
    assert all(f["user_id"] == alice.id for f in alice_folders)
    assert "Bob only" not in [f["name"] for f in alice_folders]
