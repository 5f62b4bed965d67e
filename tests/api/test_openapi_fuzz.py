"""The HTTP API against its own ``/openapi.json``, fuzzed by schemathesis (the
short form CI runs; ``bench/fuzz.py`` runs the long one): requests made from
the schema, valid and invalid, signed in with a real session token so the
routes behind auth are reached. No answer may be a 5xx, and every answer the
schema documents must have the documented shape.

Bounded: a fixed seed, a few examples per operation and a time budget keep it
under a minute, and the same seed makes the same requests on every run (a
failure found here is found again). ``MAILFLEET_FUZZ_SEED`` picks another seed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import Service, StartService, User
from tests.support.tools import missing

SEED = int(os.environ.get("MAILFLEET_FUZZ_SEED", "20261202"))
MAX_EXAMPLES = 8
# CI's 25 minutes hold about 15 s of it per profile; bench/fuzz.py is the long form.
MAX_SECONDS = 14
# No 5xx; every answer in its documented shape (errors included: the schema's
# "default" response is the error object) and with a documented status.
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"


def schemathesis_config(ids: dict[str, list[str]], doomed: dict[str, list[str]]) -> str:
    """schemathesis.toml: the path parameters drawn, most of the time, from
    identifiers that exist (``ids``; ``doomed`` for DELETE, which removes
    them), so requests get past the 404 to the code behind it; the long
    poll answering at once instead of holding each request for its timeout."""
    lines = []
    for name, values in (*ids.items(), *(("doomed_" + k, v) for k, v in doomed.items())):
        lines += [f"[dictionaries.{name}]", f"values = {values!r}".replace("'", '"'), ""]

    def bindings(prefix: str, names: list[str]) -> str:
        pairs = [f'"path.{n}" = {{ dictionary = "{prefix}{n}", probability = 0.8 }}' for n in names]
        return "parameters = { " + ", ".join(pairs) + " }"

    lines += [
        # The first block an operation matches is its only one.
        "[[operations]]",
        'exclude-method = "DELETE"',
        bindings("", list(ids)).removesuffix(" }") + ', "query.timeout" = 0 }',
        "",
        "[[operations]]",
        'include-method = "DELETE"',
        bindings("doomed_", list(doomed)),
        "",
    ]
    return "\n".join(lines)


def schemathesis_command(
    service: Service, token: str, config: Path, *, seed: int, max_examples: int, max_seconds: int
) -> list[str]:
    """The schemathesis run over ``service``'s API, signed in with ``token``."""
    executable = Path(sys.executable).with_name("schemathesis")
    return [
        str(executable),
        "--config-file",
        str(config),
        "run",
        f"{service.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--max-time",
        str(max_seconds),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--suppress-health-check",
        "all",
        # Signing out would leave every later request unauthenticated.
        "--exclude-path",
        "/v1/sessions/current",
    ]


async def run_schemathesis(command: list[str], cwd: Path) -> tuple[int, str]:
    """Runs the CLI while this loop goes on serving the API it fuzzes."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def existing_ids(alice: User, bob: User) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Identifiers in alice's mailbox to fuzz with: mail with an attachment
    (its thread, its attachment), a folder of her own; and a second set for
    the DELETE routes."""
    upload = await bob.upload("notes.txt", b"hello", "text/plain")
    for subject in ("fuzz me", "delete me"):
        await bob.send(to=[alice.email], subject=subject, body="hi", attachments=[upload["id"]])
    kept, doomed = sorted(await alice.wait_for("inbox", 2), key=lambda m: m["subject"])[::-1]
    full = (await alice.client.get(f"/v1/messages/{kept['id']}")).json()
    folders = []
    for name in ("Projects", "Old stuff"):
        created = await alice.client.post("/v1/folders", json={"name": name})
        assert created.status_code == 201, created.text
        folders.append(created.json()["id"])
    inbox = await alice.folder("inbox")
    ids = {
        "message_id": [kept["id"]],
        "thread_id": [kept["thread_id"]],
        "attachment_id": [full["attachments"][0]["id"]],
        "folder_id": [inbox["id"], folders[0]],
    }
    return ids, {"message_id": [doomed["id"]], "folder_id": [folders[1]]}


async def test_api_fuzzed_from_its_openapi_schema(
    start_service: StartService, tmp_path: Path
) -> None:
    if not Path(sys.executable).with_name("schemathesis").exists():
        missing("schemathesis is missing: scripts/bootstrap installs it (a dev dependency)")
    # A long poll schemathesis sends without a timeout waits this long.
    service = await start_service({"realtime": {"long_poll_seconds": 1}})
    alice, bob = await service.user("alice"), await service.user("bob")
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(*await existing_ids(alice, bob)))
    command = schemathesis_command(
        service, alice.token, config, seed=SEED, max_examples=MAX_EXAMPLES, max_seconds=MAX_SECONDS
    )
    code, output = await run_schemathesis(command, tmp_path)
    print(output)
    assert code == 0, output[-6000:]
    # The token was good all along: signed-in routes were really exercised.
    assert (await alice.client.get("/v1/me")).status_code == 200


async def test_openapi_declares_the_error_shape_the_api_sends(service: Service) -> None:
    """Found by the fuzzing above: /openapi.json declared FastAPI's 422
    validation shape (``{"detail": [...]}``), which the API never sends
    (invalid requests are 400 with the error object, API.md); now every
    error, whatever its status, is declared as ``ErrorOut``."""
    response = await service.client().get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert responses["default"]["content"]["application/json"]["schema"] == error, where
            if "422" in responses:
                assert responses["422"]["content"]["application/json"]["schema"] == error, where
    bad = await service.client().post("/v1/sessions", json={"email": 5})
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"code", "message"}
