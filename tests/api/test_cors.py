"""CORS and the Origin check over HTTP (decision 0012): a trusted origin is
matched whole (scheme, host and port), its preflight is answered and its
responses name it; any other origin's preflight is refused, nothing names it,
and it can change nothing. Never ``*``, never credentials: the API's
credential is a bearer token in a header."""

from __future__ import annotations

import httpx

from tests.conftest import PASSWORD, StartService

TRUSTED = "https://app.example.org"
TRUSTED_WITH_PORT = "http://localhost:8443"
# Each is one step away from a trusted origin, or no origin at all.
UNTRUSTED = [
    "http://app.example.org",  # the scheme
    "https://app.example.org:444",  # the port
    "https://app.example.org.evil.test",  # a suffix
    "https://evil-app.example.org",
    "https://example.org",
    "http://localhost:8444",
    "https://localhost:8443",
    "http://localhost",
    "null",
    "file://",
    "https://evil.test",
]


def no_cors(response: httpx.Response) -> None:
    assert "access-control-allow-origin" not in response.headers, response.headers
    assert "access-control-allow-credentials" not in response.headers


async def test_preflights_are_answered_for_trusted_origins_only(
    start_service: StartService,
) -> None:
    service = await start_service({"http": {"trusted_origins": [TRUSTED, TRUSTED_WITH_PORT]}})
    client = service.client()
    for origin in (TRUSTED, TRUSTED_WITH_PORT, "https://app.example.org:443"):
        for path, method in (
            ("/v1/folders", "POST"),
            ("/v1/messages/1", "PATCH"),
            ("/v1/me", "GET"),
        ):
            r = await client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            assert r.status_code == 204, (origin, path, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
            assert methods == {"GET", "POST", "PATCH", "DELETE"}
            allowed = {
                h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")
            }
            assert allowed == {"authorization", "content-type"}
            assert "access-control-allow-credentials" not in r.headers
            assert "Origin" in r.headers["vary"]
    for origin in UNTRUSTED:
        r = await client.options(
            "/v1/folders",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 403, origin
        assert r.json()["error"]["code"] == "cross_origin"
        no_cors(r)
    # An OPTIONS that is no preflight is no route of the API.
    assert (await client.options("/v1/folders")).status_code == 405


async def test_only_trusted_origins_read_answers_or_change_anything(
    start_service: StartService,
) -> None:
    service = await start_service({"http": {"trusted_origins": [TRUSTED]}})
    alice = await service.user("alice")
    folder = (await alice.client.post("/v1/folders", json={"name": "Mine"})).json()

    read = await alice.client.get("/v1/me", headers={"Origin": TRUSTED})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == TRUSTED
    assert "access-control-allow-credentials" not in read.headers
    assert "Origin" in read.headers["vary"]
    made = await alice.client.post(
        "/v1/folders", json={"name": "From app"}, headers={"Origin": TRUSTED}
    )
    assert made.status_code == 201
    assert made.headers["access-control-allow-origin"] == TRUSTED
    # An error answer is readable too: the app must see its 401 to log in again.
    anonymous = await service.client().get("/v1/me", headers={"Origin": TRUSTED})
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == TRUSTED

    for origin in UNTRUSTED:
        # A read is answered (the token protects it) but names no origin, so
        # a browser keeps the answer from the foreign page.
        r = await alice.client.get("/v1/me", headers={"Origin": origin})
        assert r.status_code == 200
        no_cors(r)
        attempts = [
            ("POST", "/v1/folders", {"name": f"from {origin}"}),
            ("PATCH", f"/v1/folders/{folder['id']}", {"name": "Renamed"}),
            ("DELETE", f"/v1/folders/{folder['id']}", None),
            ("POST", "/v1/sessions", {"email": alice.email, "password": PASSWORD}),
            ("DELETE", "/v1/sessions/current", None),
        ]
        for method, path, body in attempts:
            r = await alice.client.request(method, path, json=body, headers={"Origin": origin})
            assert r.status_code == 403, (origin, method, path, r.text)
            assert r.json()["error"]["code"] == "cross_origin"
            no_cors(r)

    names = sorted(
        f["name"] for f in (await alice.client.get("/v1/folders")).json() if not f["role"]
    )
    assert names == ["From app", "Mine"]
    assert (await alice.client.get("/v1/me")).status_code == 200  # not logged out

    # The API's own origin: its scheme, host and port, whole.
    own = service.base_url
    r = await alice.client.post("/v1/folders", json={"name": "Own"}, headers={"Origin": own})
    assert r.status_code == 201
    no_cors(r)  # same origin: nothing to allow
    other_scheme = own.replace("http://", "https://")
    r = await alice.client.post(
        "/v1/folders", json={"name": "TLS?"}, headers={"Origin": other_scheme}
    )
    assert r.status_code == 403
    port = int(own.rsplit(":", 1)[1])
    r = await alice.client.post(
        "/v1/folders", json={"name": "port"}, headers={"Origin": f"http://127.0.0.1:{port + 1}"}
    )
    assert r.status_code == 403
