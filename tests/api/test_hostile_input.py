"""Hostile input about accounts, addresses and composed mail (issue 14): login
brute force, look-alike addresses, header injection and attachment file
names, each tried over real HTTP (and SMTP where mail enters that way) as an
attacker would, and checked by what a user or a recipient would see."""

from __future__ import annotations

import asyncio
import email
import smtplib
import unicodedata
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.conftest import DOMAIN, PASSWORD, Service, StartService, User

# -- login brute force (accounts/throttle.py) ------------------------------------------


def _throttled(per_address: int = 100, per_ip: int = 100, **more: float) -> dict[str, Any]:
    return {
        "auth": {
            "failed_logins_per_address": per_address,
            "failed_logins_per_ip": per_ip,
            **more,
        }
    }


async def _log_in(service: Service, address: str, password: str) -> httpx.Response:
    return await service.client().post(
        "/v1/sessions", json={"email": address, "password": password}
    )


def _locked(response: httpx.Response, *, at_most: int) -> int:
    """The Retry-After of a lockout answer, checked to be one."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert "too many failed logins" in response.json()["error"]["message"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= at_most
    return retry_after


async def test_failed_logins_lock_the_address_even_for_the_right_password(
    start_service: StartService,
) -> None:
    service = await start_service(_throttled(per_address=3, lockout_seconds=60))
    alice, bob = await service.user("alice"), await service.user("bob")
    for attempt in range(3):
        wrong = await _log_in(service, alice.email, f"guess {attempt}")
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_credentials"
    _locked(await _log_in(service, alice.email, PASSWORD), at_most=60)
    # However the address is spelled.
    _locked(await _log_in(service, alice.email.upper(), PASSWORD), at_most=60)
    # The lock is the address's: Bob, from the same client, logs in.
    assert (await _log_in(service, bob.email, PASSWORD)).status_code == 201
    # Sessions made before the lock go on working.
    assert (await alice.client.get("/v1/me")).status_code == 200

    # An address no one has locks the same way: the answers tell no one
    # which addresses exist.
    for _ in range(3):
        assert (await _log_in(service, f"nobody@{DOMAIN}", PASSWORD)).status_code == 401
    _locked(await _log_in(service, f"nobody@{DOMAIN}", PASSWORD), at_most=60)


async def test_failed_logins_lock_the_client_whatever_addresses_it_tries(
    start_service: StartService,
) -> None:
    service = await start_service(_throttled(per_ip=4, lockout_seconds=60))
    alice = await service.user("alice")
    for victim in ("a", "b", "c", "d"):
        response = await _log_in(service, f"{victim}@{DOMAIN}", "123456")
        assert response.status_code == 401
    _locked(await _log_in(service, alice.email, PASSWORD), at_most=60)
    # Not even the right password of an account never tried passes.
    _locked(await _log_in(service, f"zed@{DOMAIN}", PASSWORD), at_most=60)


async def test_clients_behind_a_balancer_each_have_their_own_budget(
    start_service: StartService,
) -> None:
    """A balancer on loopback (the local fleet's HAProxy) names the client in
    X-Forwarded-For; one guesser behind it does not lock out the others."""
    service = await start_service(_throttled(per_ip=2, lockout_seconds=60))
    alice = await service.user("alice")
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    client = service.client()
    for victim in ("a", "b"):
        response = await client.post(
            "/v1/sessions", json={"email": f"{victim}@{DOMAIN}", "password": "x"}, headers=guesser
        )
        assert response.status_code == 401
    login = {"email": alice.email, "password": PASSWORD}
    _locked(await client.post("/v1/sessions", json=login, headers=guesser), at_most=60)
    other = {"X-Forwarded-For": "198.51.100.1"}
    assert (await client.post("/v1/sessions", json=login, headers=other)).status_code == 201


async def test_a_successful_login_clears_the_address_failures(start_service: StartService) -> None:
    service = await start_service(_throttled(per_address=3))
    alice = await service.user("alice")
    for _ in range(3):
        for attempt in range(2):
            assert (await _log_in(service, alice.email, f"typo {attempt}")).status_code == 401
        assert (await _log_in(service, alice.email, PASSWORD)).status_code == 201


async def test_lockouts_grow_while_failures_go_on(start_service: StartService) -> None:
    service = await start_service(_throttled(per_address=2, lockout_seconds=0.5))
    alice = await service.user("alice")

    async def spend_budget() -> None:
        for attempt in range(2):
            assert (await _log_in(service, alice.email, f"guess {attempt}")).status_code == 401

    await spend_budget()  # first lock: 0.5 s
    _locked(await _log_in(service, alice.email, PASSWORD), at_most=1)
    await asyncio.sleep(0.55)
    await spend_budget()  # second: 1 s
    await asyncio.sleep(0.55)
    _locked(await _log_in(service, alice.email, PASSWORD), at_most=1)
    await asyncio.sleep(0.5)
    # Over; the right password clears the history too.
    assert (await _log_in(service, alice.email, PASSWORD)).status_code == 201
    await spend_budget()  # a first lock again: 0.5 s
    await asyncio.sleep(0.55)
    assert (await _log_in(service, alice.email, PASSWORD)).status_code == 201


async def test_login_with_garbage_is_a_failure_not_an_error(service: Service, alice: User) -> None:
    email_json = alice.email.encode()
    for body, status, code in (
        (b'{"email": "no address", "password": "x"}', 401, "invalid_credentials"),
        (b'{"email": "ali\\u200bce@example.com", "password": "x"}', 401, "invalid_credentials"),
        (b'{"email": "%s", "password": "nul \\u0000"}' % email_json, 401, "invalid_credentials"),
        # Lone surrogates are no text: the request itself is refused.
        (b'{"email": "ali\\ud800ce@example.com", "password": "x"}', 400, "invalid_field"),
        (b'{"email": "%s", "password": "\\ud800 lone"}' % email_json, 400, "invalid_field"),
    ):
        response = await service.client().post(
            "/v1/sessions", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    # And the account still works.
    assert (await _log_in(service, alice.email, PASSWORD)).status_code == 201


# -- addresses (proto/addresses.py, decision 0024) -------------------------------------


async def test_every_spelling_of_an_idn_address_is_one_account(service: Service) -> None:
    await service.runtime.accounts.add_domain("bücher.example", open_signup=True)
    composed = "ann@bücher.example"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    client = service.client()
    created = await client.post(
        "/v1/accounts", json={"email": composed, "password": PASSWORD, "name": "Ann"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "ann@xn--bcher-kva.example"  # stored as the A-label
    for spelling in (decomposed, "ANN@BÜCHER.EXAMPLE", "ann@xn--bcher-kva.example"):
        again = await client.post(
            "/v1/accounts", json={"email": spelling, "password": PASSWORD, "name": "Ann"}
        )
        assert again.status_code == 409, spelling
        assert again.json()["error"]["code"] == "address_taken"
        login = await client.post("/v1/sessions", json={"email": spelling, "password": PASSWORD})
        assert login.status_code == 201, spelling
        me = await service.client(login.json()["token"]).get("/v1/me")
        assert me.json()["id"] == created.json()["id"]


async def test_decomposed_recipients_are_the_composed_ones(
    service: Service, alice: User, bob: User
) -> None:
    composed = "jürgen@remote.example"
    decomposed = unicodedata.normalize("NFD", composed)
    await alice.send(
        to=[composed, bob.email.upper()],
        cc=[{"email": decomposed, "name": unicodedata.normalize("NFD", "Jürgen Zoë")}],
        bcc=[decomposed],
    )
    (sent,) = await alice.messages("sent")
    full = (await alice.client.get(f"/v1/messages/{sent['id']}")).json()
    assert sorted(d["email"] for d in full["delivery"]) == ["BOB@example.com", composed]
    (item,) = await service.runtime.stores.queue.list("outgoing")
    assert item.payload["recipients"] == [composed]
    (received,) = await bob.messages("inbox")
    raw = (await bob.client.get(f"/v1/messages/{received['id']}/raw")).content
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Cc"].addresses[0].display_name == "Jürgen Zoë"  # NFC


_HIDDEN = [
    ("\u200b", "U+200B"),  # zero width space
    ("\u200d", "U+200D"),  # zero width joiner
    ("\u2060", "U+2060"),  # word joiner
    ("\ufeff", "U+FEFF"),  # byte order mark
    ("\u202e", "U+202E"),  # right-to-left override
    ("\u2067", "U+2067"),  # right-to-left isolate
    ("\u2028", "U+2028"),  # line separator
    ("\u2029", "U+2029"),  # paragraph separator
    ("\x07", "U+0007"),  # a control
]


@pytest.mark.parametrize(("char", "named"), _HIDDEN)
async def test_hidden_characters_are_refused_in_local_parts(
    service: Service, alice: User, bob: User, char: str, named: str
) -> None:
    client = service.client()
    signed_up = await client.post(
        "/v1/accounts", json={"email": f"ev{char}e@{DOMAIN}", "password": PASSWORD, "name": "E"}
    )
    assert signed_up.status_code == 422
    assert signed_up.json()["error"]["code"] == "invalid_address"
    for field in ("to", "cc", "bcc"):
        sent = await alice.client.post(
            "/v1/messages",
            json={"to": [bob.email], field: [f"b{char}ob@remote.example"], "subject": "x"},
        )
        assert sent.status_code == 422, sent.text
        assert sent.json()["error"]["code"] == "invalid_address"
        assert named in sent.json()["error"]["message"]
    assert await alice.messages("sent") == []
    assert await service.runtime.stores.queue.list("outgoing") == []


@pytest.mark.parametrize(("char", "named"), _HIDDEN)
async def test_hidden_characters_are_refused_in_display_names(
    service: Service, alice: User, bob: User, char: str, named: str
) -> None:
    name = f"Bob{char}Example"
    sent = await alice.client.post(
        "/v1/messages", json={"to": [{"email": bob.email, "name": name}], "subject": "x"}
    )
    assert sent.status_code == 422, sent.text
    assert sent.json()["error"]["code"] == "invalid_address"
    if char not in "\u2028\u2029":
        assert named in sent.json()["error"]["message"]
    signed_up = await service.client().post(
        "/v1/accounts", json={"email": f"eve@{DOMAIN}", "password": PASSWORD, "name": name}
    )
    assert signed_up.status_code == 422
    assert signed_up.json()["error"]["code"] == "invalid_name"
    assert await bob.messages("inbox") == []


async def test_mx_refuses_hidden_characters_in_recipients(service: Service, bob: User) -> None:
    def session() -> list[tuple[int, bytes]]:
        host, port = service.server.smtp_address
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo("mx.remote.example")
            assert client.mail("sender@remote.example", ["SMTPUTF8"])[0] == 250
            return [
                client.rcpt(recipient)
                for recipient in (f"b\u200bob@{DOMAIN}", f"bo\u202eb@{DOMAIN}", bob.email)
            ]

    zero_width, bidi, plain = await asyncio.to_thread(session)
    assert (zero_width[0], zero_width[1][:5]) == (553, b"5.1.3")
    assert (bidi[0], bidi[1][:5]) == (553, b"5.1.3")
    assert plain[0] == 250


# -- header injection (proto/compose.py) ------------------------------------------------

_HEADERS = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]


def _header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line[:1] not in b" \t"
    ]


async def test_no_header_can_be_injected_through_the_api(
    service: Service, alice: User, bob: User
) -> None:
    evil = "\r\nBcc: evil@evil.example\r\nX-Injected: yes"
    # Bob writes first, so that Alice's reply carries In-Reply-To/References.
    await bob.send(to=[alice.email], subject="Question")
    (question,) = await alice.messages("inbox")
    question_id = (await alice.client.get(f"/v1/messages/{question['id']}")).json()[
        "message_id_header"
    ]
    upload = await alice.upload("plan.pdf", b"%PDF-1.7 x", "application/pdf")
    sent = await alice.send(
        to=[{"email": bob.email, "name": "Bob Example"}],
        cc=["far@remote.example"],
        subject=f"Re: Question{evil}\nBcc: other@evil.example",
        body=f"Body{evil}",
        attachments=[upload["id"]],
        in_reply_to=question["id"],
    )
    # Every way in that is not plain text is refused with a clear error.
    for hostile in (
        {"to": [{"email": bob.email, "name": f"Bob{evil}"}]},
        {"to": [{"email": bob.email, "name": "Bob\u2028Bcc: evil@evil.example"}]},
        {"to": [f"bob{evil}@{DOMAIN}"]},
        {"to": [bob.email], "in_reply_to": f"{question['id']}{evil}"},
        {"to": [bob.email], "subject": "nul\x00Bcc: evil@evil.example"},
    ):
        refused = await alice.client.post("/v1/messages", json={"subject": "x", **hostile})
        assert refused.status_code == 422, (hostile, refused.text)
        assert refused.json()["error"]["code"] in {
            "invalid_address",
            "unknown_message",
            "invalid_subject",
        }

    (received,) = await bob.messages("inbox")
    local_raw = (await bob.client.get(f"/v1/messages/{received['id']}/raw")).content
    (item,) = await service.runtime.stores.queue.list("outgoing")
    assert item.payload["recipients"] == ["far@remote.example"]
    remote_raw = await service.runtime.stores.blobs.get(item.payload["raw_hash"])
    for raw in (local_raw, remote_raw):
        names = _header_names(raw)
        assert sorted(names) == sorted([*_HEADERS, "In-Reply-To", "References"]), names
        parsed = email.message_from_bytes(raw, policy=policy.default)
        # Python's email folds a long value whole onto the next line; a
        # reader unfolds it.
        assert parsed["Subject"].strip() == (
            "Re: Question Bcc: evil@evil.example X-Injected: yes Bcc: other@evil.example"
        )
        assert [a.addr_spec for a in parsed["To"].addresses] == [bob.email]
        assert [a.addr_spec for a in parsed["Cc"].addresses] == ["far@remote.example"]
        assert parsed["In-Reply-To"] == parsed["References"] == question_id
        body = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body == f"Body{evil}\n".replace("\r\n", "\n")  # the body is free text
    assert sent["status"] == "queued"


async def test_long_subjects_and_names_are_refused(alice: User, bob: User) -> None:
    for body, code in (
        ({"to": [bob.email], "subject": "s" * 999}, "subject_too_long"),
        ({"to": [{"email": bob.email, "name": "n" * 201}], "subject": "x"}, "invalid_address"),
    ):
        response = await alice.client.post("/v1/messages", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
    # At the limits, sent, and each header line folded to RFC 5322's length.
    await alice.send(to=[{"email": bob.email, "name": "n " * 100}], subject="word " * 199)
    (message,) = await bob.messages("inbox")
    raw = (await bob.client.get(f"/v1/messages/{message['id']}/raw")).content
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert message["subject"] == ("word " * 199).strip()


# -- attachment file names -------------------------------------------------------------


def _multipart(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A form upload whose file name is written as given, byte for byte
    (httpx would percent-encode what an attacker would not)."""
    body = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
        + b"\r\n--BOUNDARY--\r\n"
    )
    return body, {"content-type": "multipart/form-data; boundary=BOUNDARY"}


_FILENAMES = [
    # (as the client writes it in the form, as it is kept)
    (b"../../etc/passwd", "passwd"),
    (b"..\\\\..\\\\windows\\\\boot.ini", "boot.ini"),
    (b"..", "attachment"),
    (b'quote\\"d.txt', 'quote"d.txt'),
    (b"nul\x00name.txt", "nulname.txt"),
    ("report\u202etxt.csv".encode(), "reporttxt.csv"),
    ("zero\u200bwidth\u2028.txt".encode(), "zerowidth.txt"),
    ("cafe\u0301.txt".encode(), "café.txt"),  # NFC
    (b"a;b=c; filename=evil.txt", "a;b=c; filename=evil.txt"),
]


def _content_disposition_name(value: str) -> tuple[str, str]:
    """(the quoted ASCII fallback, the RFC 5987 name decoded) of an RFC 6266 value."""
    assert value.startswith('attachment; filename="')
    fallback, _, rest = value[len('attachment; filename="') :].partition('"; ')
    assert rest.startswith("filename*=UTF-8''")
    encoded = rest[len("filename*=UTF-8''") :]
    assert all(c.isalnum() or c in "%-._~" for c in encoded), encoded
    return fallback, unquote(encoded)


async def test_hostile_attachment_names_never_reach_a_path_or_a_raw_header(
    service: Service, alice: User, bob: User, tmp_path: Path
) -> None:
    uploaded = []
    for written, kept in _FILENAMES:
        body, headers = _multipart(written, b"data of " + written)
        response = await alice.client.post("/v1/attachments", content=body, headers=headers)
        assert response.status_code == 201, (written, response.text)
        assert response.json()["filename"] == kept, written
        uploaded.append(response.json())
    # A bare CR in the form's own header is a broken form, refused whole.
    body, headers = _multipart(b"a\rb.txt", b"x")
    broken = await alice.client.post("/v1/attachments", content=body, headers=headers)
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "bad_request"

    await alice.send(
        to=[bob.email], cc=["far@remote.example"], attachments=[u["id"] for u in uploaded]
    )
    (received,) = await bob.messages("inbox")
    message = (await bob.client.get(f"/v1/messages/{received['id']}")).json()
    assert [a["filename"] for a in message["attachments"]] == [kept for _, kept in _FILENAMES]
    for attachment, (written, kept) in zip(message["attachments"], _FILENAMES, strict=True):
        download = await bob.client.get(
            f"/v1/messages/{received['id']}/attachments/{attachment['id']}"
        )
        assert download.status_code == 200
        assert download.content == b"data of " + written
        fallback, exact = _content_disposition_name(download.headers["content-disposition"])
        assert exact == kept
        assert fallback.isascii() and fallback.isprintable()
        assert not any(c in fallback for c in '"\\/')

    # The composed mail names each file exactly, in its own parameter.
    (item,) = await service.runtime.stores.queue.list("outgoing")
    local_raw = (await bob.client.get(f"/v1/messages/{received['id']}/raw")).content
    remote_raw = await service.runtime.stores.blobs.get(item.payload["raw_hash"])
    for raw in (local_raw, remote_raw):
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        parts = list(parsed.iter_attachments())
        assert [p.get_filename() for p in parts] == [kept for _, kept in _FILENAMES]
        assert all(p.get_content_disposition() == "attachment" for p in parts)
        assert sorted(_header_names(raw)) == sorted(_HEADERS)

    # No name became a file: everything written is named by its content hash.
    names = await asyncio.to_thread(_file_names, tmp_path)
    assert not names & {"passwd", "boot.ini", "reporttxt.csv", "evil.txt"}


def _file_names(root: Path) -> set[str]:
    return {path.name for path in root.rglob("*")}
