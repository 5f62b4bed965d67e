"""The webmail's page and files at ``/``, the browser-safety headers, the
Origin check, and the two routes compose needs (contacts, limits)."""

from __future__ import annotations

import httpx

from tests.conftest import PASSWORD, Service, User


async def test_page_and_assets_with_strict_headers(service: Service) -> None:
    client = service.client()
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/assets/js/main.js">' in page.text
    script = await client.get("/assets/js/main.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    etag = script.headers["etag"]
    again = await client.get("/assets/js/main.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


async def test_other_paths_keep_their_answers(service: Service) -> None:
    client = service.client()
    for path in ("/v1/nope", "/assets/nope.js", "/nope"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    assert "/v1/contacts" in (await client.get("/openapi.json")).json()["paths"]
    api = await client.get("/v1/me")
    assert api.status_code == 401
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert api.headers["x-content-type-options"] == "nosniff"


async def test_state_changing_requests_from_another_site_are_refused(
    service: Service, alice: User
) -> None:
    client = service.client()
    body = {"email": alice.email, "password": PASSWORD}
    foreign = await client.post("/v1/sessions", json=body, headers={"Origin": "https://evil.test"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "cross_origin"
    opaque = await client.post("/v1/sessions", json=body, headers={"Origin": "null"})
    assert opaque.status_code == 403
    same = await client.post("/v1/sessions", json=body, headers={"Origin": service.base_url})
    assert same.status_code == 201
    # No Origin: not a browser acting for a page (curl, apps).
    assert (await client.post("/v1/sessions", json=body)).status_code == 201
    # Reads carry no Origin check: the bearer token is what protects them.
    read = await alice.client.get("/v1/me", headers={"Origin": "https://evil.test"})
    assert read.status_code == 200


async def test_contacts_rank_past_correspondents(service: Service, alice: User, bob: User) -> None:
    carol = await service.user("carol", "Carol Singer")
    await alice.send(to=[bob.email, carol.email], subject="one")
    await alice.send(to=[carol.email], subject="two")
    await bob.send(to=[alice.email], subject="three")
    everyone = (await alice.client.get("/v1/contacts")).json()
    assert [c["email"] for c in everyone] == [carol.email, bob.email]
    assert everyone[0] == {"name": "", "email": carol.email, "count": 4}
    by_name = (await alice.client.get("/v1/contacts", params={"q": "bo"})).json()
    assert [c["email"] for c in by_name] == [bob.email]
    assert by_name[0]["name"] == "Bob Example"  # the name seen on received mail
    assert (await alice.client.get("/v1/contacts", params={"q": "zz"})).json() == []
    assert (await bob.client.get("/v1/contacts", params={"q": "sing"})).json() == []
    anonymous = service.client()
    assert (await anonymous.get("/v1/contacts")).status_code == 401


async def test_limits(service: Service, alice: User) -> None:
    limits = (await alice.client.get("/v1/limits")).json()
    assert limits == {
        "max_message_bytes": 25 * 1024 * 1024,
        "max_attachment_bytes": 25 * 1024 * 1024,
        "max_recipients": 100,
    }


async def test_trusted_origin_setting(start_service: object) -> None:
    service = await start_service({"http": {"trusted_origins": ["https://mail.example.org"]}})  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        answer = await client.post(
            "/v1/sessions",
            json={"email": "x@example.com", "password": "y"},
            headers={"Origin": "https://mail.example.org"},
        )
        assert answer.status_code == 401
