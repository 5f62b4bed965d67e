"""GET /v1/search as a user sees it: mail arrives over SMTP and through the
API, and is found by words, phrases and operators, in any language, only
ever in the caller's own mailbox."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service, User
from tests.test_restart import run_cli


def deliver(service: Service, to: str, sender: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=10) as client:
        client.send_message(message)


async def search(user: User, q: str, **params: Any) -> list[dict[str, Any]]:
    response = await user.client.get("/v1/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def subjects(user: User, q: str) -> set[str]:
    return {m["subject"] for m in await search(user, q)}


@pytest.fixture
async def mailbox(service: Service, alice: User, bob: User) -> dict[str, Any]:
    """Bob's mailbox: mail from outside over SMTP, and from Alice through the API."""
    mails = [
        (
            "Jürgen Müller <juergen@firma.example>",
            "Straßenfest am Wochenende",
            "Das Straßenfest beginnt um zehn. Grüße aus München.",
        ),
        (
            "김민수 <minsu@corp.example>",
            "주간 회의 안내",
            "내일 회의를 오전 10시에 합니다. 회의실은 3층입니다.",
        ),
        ("田中 <tanaka@example.jp>", "会議の件", "明日の会議は会議室Aで行います。"),
        (
            "Carol Ng <carol@outside.example>",
            "Quarterly budget review",
            "Please review the quarterly budget before Friday.",
        ),
        (
            "Dan <dan@outside.example>",
            "Budget quarterly? no",
            "The word order differs: budget then quarterly.",
        ),
    ]
    for sender, subject, body in mails:
        await asyncio.to_thread(deliver, service, bob.email, sender, subject, body)
    await bob.wait_for("inbox", len(mails))
    report = await alice.upload("forecast-2026.xlsx", b"PK\x03\x04 data", "application/zip")
    await alice.send(
        to=[{"email": bob.email}],
        subject="Forecast attached",
        body="numbers inside",
        attachments=[report["id"]],
    )
    await alice.send(to=[{"email": bob.email}], subject="Lunch", body="pizza or sushi?")
    inbox = await bob.wait_for("inbox", len(mails) + 2)
    return {m["subject"]: m for m in inbox}


async def test_words_operators_and_phrases(bob: User, alice: User, mailbox: dict[str, Any]) -> None:
    assert await subjects(bob, "budget") == {"Quarterly budget review", "Budget quarterly? no"}
    assert await subjects(bob, '"quarterly budget"') == {"Quarterly budget review"}
    assert await subjects(bob, "subject:budget review") == {"Quarterly budget review"}
    assert await subjects(bob, "from:carol") == {"Quarterly budget review"}
    assert await subjects(bob, "from:outside.example budget") == {
        "Quarterly budget review",
        "Budget quarterly? no",
    }
    # An address by part, and by the display name.
    assert await subjects(bob, "from:alice") == {"Forecast attached", "Lunch"}
    assert await subjects(bob, "from:ng") == {"Quarterly budget review"}
    assert await subjects(bob, f"to:{bob.email}") >= {"Lunch", "Quarterly budget review"}
    assert await subjects(bob, "has:attachment") == {"Forecast attached"}
    assert await subjects(bob, "forecast 2026") == {"Forecast attached"}  # attachment name
    assert await subjects(bob, "budget -subject:review") == {"Budget quarterly? no"}
    assert await subjects(bob, "pizza OR Friday") == {"Lunch", "Quarterly budget review"}
    assert await subjects(bob, "(pizza OR friday) from:alice") == {"Lunch"}
    assert await subjects(bob, "is:unread budget") == {
        "Quarterly budget review",
        "Budget quarterly? no",
    }

    lunch = mailbox["Lunch"]
    await bob.client.patch(f"/v1/messages/{lunch['id']}", json={"is_read": True})
    await bob.client.patch(
        f"/v1/messages/{mailbox['Forecast attached']['id']}", json={"is_flagged": True}
    )
    assert await subjects(bob, "is:read") == {"Lunch"}
    assert "Lunch" not in await subjects(bob, "is:unread")
    assert await subjects(bob, "is:flagged") == {"Forecast attached"}
    assert await subjects(bob, "is:starred numbers") == {"Forecast attached"}

    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    assert len(await search(bob, f"after:{today} before:{tomorrow}")) == 7
    assert await search(bob, f"before:{today} budget") == []
    assert await subjects(bob, f"after:{today:%Y/%m/%d} subject:lunch") == {"Lunch"}

    # Alice finds her own sent copy, never Bob's Inbox.
    assert await subjects(alice, "lunch") == {"Lunch"}
    assert await subjects(alice, "in:sent") == {"Forecast attached", "Lunch"}
    assert await search(alice, "budget") == []
    assert await search(alice, "from:carol") == []


async def test_languages(bob: User, mailbox: dict[str, Any]) -> None:
    # German: umlauts and ß either way.
    for q in ("müller", "Muller", "MÜLLER", "strassenfest", "Straßenfest", "grusse", "münchen"):
        assert await subjects(bob, q) == {"Straßenfest am Wochenende"}, q
    assert await subjects(bob, "from:jürgen") == {"Straßenfest am Wochenende"}
    # Korean: a noun inside a word with its particle (회의를), and phrases.
    assert await subjects(bob, "회의") == {"주간 회의 안내"}
    assert await subjects(bob, "회의실은") == {"주간 회의 안내"}
    assert await subjects(bob, "subject:안내") == {"주간 회의 안내"}
    assert await subjects(bob, "from:김민수") == {"주간 회의 안내"}
    assert await search(bob, "회식") == []
    # Japanese, written without spaces.
    assert await subjects(bob, "会議") == {"会議の件"}
    assert await subjects(bob, "会議室") == {"会議の件"}
    assert await search(bob, "会社") == []


async def test_folders_trash_moves_and_deletes(bob: User, mailbox: dict[str, Any]) -> None:
    folders = {f["role"] or f["name"]: f for f in (await bob.client.get("/v1/folders")).json()}
    created = await bob.client.post("/v1/folders", json={"name": "Finance 2026"})
    finance = created.json()
    quarterly = mailbox["Quarterly budget review"]
    await bob.client.patch(f"/v1/messages/{quarterly['id']}", json={"folder_id": finance["id"]})
    assert await subjects(bob, 'in:"finance 2026"') == {"Quarterly budget review"}
    assert await subjects(bob, "in:inbox budget") == {"Budget quarterly? no"}
    assert await subjects(bob, "budget") == {"Quarterly budget review", "Budget quarterly? no"}

    # Trash is left out unless asked for; deleted mail is gone.
    lunch = mailbox["Lunch"]
    await bob.client.patch(
        f"/v1/messages/{lunch['id']}", json={"folder_id": folders["trash"]["id"]}
    )
    assert await search(bob, "pizza") == []
    assert await subjects(bob, "in:trash pizza") == {"Lunch"}
    deleted = await bob.client.delete(f"/v1/messages/{lunch['id']}")
    assert deleted.status_code == 204
    assert await search(bob, "in:trash pizza") == []


async def test_pagination_newest_first(service: Service, bob: User, alice: User) -> None:
    for n in range(7):
        await alice.send(to=[{"email": bob.email}], subject=f"report {n}", body="weekly report")
    await bob.wait_for("inbox", 7)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await bob.client.get("/v1/search", params={"q": "weekly report", **params})
        assert response.status_code == 200
        page = response.json()
        seen += [m["subject"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"report {n}" for n in reversed(range(7))]


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ('"unclosed', "not closed"),
        ("(budget", "not closed"),
        ("budget)", "closes nothing"),
        ("is:banana", "is:banana"),
        ("before:2025-13-45", "not a date"),
        ("in:nowhere", "no folder named"),
        ("OR budget", "OR needs"),
        ("!!! ???", "nothing to search"),
        ("", "nothing to search"),
    ],
)
async def test_bad_queries_are_400_with_a_reason(bob: User, q: str, message: str) -> None:
    response = await bob.client.get("/v1/search", params={"q": q})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_query"
    assert message in error["message"]


async def test_search_needs_a_token_and_a_valid_cursor(service: Service, bob: User) -> None:
    anonymous = service.client()
    assert (await anonymous.get("/v1/search", params={"q": "x"})).status_code == 401
    bad = await bob.client.get("/v1/search", params={"q": "x", "cursor": "nonsense!"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_cursor"


async def test_index_rebuild_restores_search(
    service: Service, bob: User, mailbox: dict[str, Any], tmp_path: Path
) -> None:
    await service.runtime.stores.search.clear()
    assert await search(bob, "budget") == []
    added = await service.runtime.search.rebuild(int(bob.id))
    assert added == 7
    assert await subjects(bob, "budget") == {"Quarterly budget review", "Budget quarterly? no"}
    assert await subjects(bob, "회의") == {"주간 회의 안내"}
    assert await subjects(bob, "forecast") == {"Forecast attached"}
    # Indexing again adds nothing twice.
    assert await service.runtime.search.rebuild(int(bob.id)) == 0

    # The operator's command, on the data directory, while the server runs.
    rebuilt = await asyncio.to_thread(run_cli, tmp_path / "data", "index", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "indexed 9 messages of every account" in rebuilt.stdout  # bob 7, alice 2 sent
    assert await subjects(bob, "budget") == {"Quarterly budget review", "Budget quarterly? no"}
    one = await asyncio.to_thread(
        run_cli, tmp_path / "data", "index", "rebuild", "--account", bob.email
    )
    assert "indexed 0 messages" in one.stdout
    unknown = await asyncio.to_thread(
        run_cli, tmp_path / "data", "index", "rebuild", "--account", "nobody@example.com"
    )
    assert unknown.returncode == 1
    assert "no account" in unknown.stderr
