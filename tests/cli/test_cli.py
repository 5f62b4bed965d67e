"""The admin CLI as an operator runs it: real processes, exit codes, output."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import dkim

from mailfleet.config import load_settings
from mailfleet.proto.dkim import sign
from mailfleet.runtime import Runtime
from tests.support.profile import Profile
from tests.test_restart import run_cli


def test_domain_and_user_lifecycle(tmp_path: Path, profile: Profile) -> None:
    data = tmp_path / "data"
    profile.storage(data)
    added = run_cli(data, "domain", "add", "Example.COM", "--open-signup")
    assert added.returncode == 0, added.stderr
    assert "example.com" in added.stdout
    run_cli(data, "domain", "add", "closed.example")
    listing = run_cli(data, "domain", "list")
    assert listing.stdout.splitlines() == ["closed.example\tclosed", "example.com\topen-signup"]

    again = run_cli(data, "domain", "add", "example.com")
    assert again.returncode == 1
    assert "exists" in again.stderr

    user = run_cli(
        data,
        "user",
        "add",
        "alice@example.com",
        "--name",
        "Alice",
        "--password-stdin",
        stdin="a good password\n",
    )
    assert user.returncode == 0, user.stderr
    # Admins may add users on domains closed to sign-up.
    closed = run_cli(
        data, "user", "add", "bob@closed.example", "--password-stdin", stdin="another password\n"
    )
    assert closed.returncode == 0, closed.stderr
    listing = run_cli(data, "user", "list")
    lines = listing.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["alice@example.com", "bob@closed.example"]
    assert lines[0].split("\t")[2:] == ["active", "Alice"]

    duplicate = run_cli(
        data, "user", "add", "ALICE@example.com", "--password-stdin", stdin="a good password\n"
    )
    assert duplicate.returncode == 1
    assert "taken" in duplicate.stderr

    assert (
        run_cli(
            data,
            "user",
            "passwd",
            "alice@example.com",
            "--password-stdin",
            stdin="changed password\n",
        ).returncode
        == 0
    )
    assert run_cli(data, "user", "disable", "alice@example.com").returncode == 0
    assert "disabled" in run_cli(data, "user", "list", "--domain", "example.com").stdout
    assert run_cli(data, "user", "disable", "alice@example.com", "--enable").returncode == 0
    assert "active" in run_cli(data, "user", "list", "--domain", "example.com").stdout


def test_errors_are_clear_and_non_zero(tmp_path: Path, profile: Profile) -> None:
    data = tmp_path / "data"
    profile.storage(data)
    unknown_domain = run_cli(
        data, "user", "add", "x@nowhere.example", "--password-stdin", stdin="a good password\n"
    )
    assert unknown_domain.returncode == 1
    assert "not a hosted domain" in unknown_domain.stderr
    assert run_cli(data, "domain", "add", "not a domain").returncode == 1
    missing = run_cli(data, "user", "passwd", "ghost@example.com", "--password-stdin", stdin="pw\n")
    assert missing.returncode == 1
    usage = run_cli(data, "user", "frobnicate")
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_bad_config_names_every_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "mailfleet.toml"
    config.write_text(
        "[limits]\nmax_recipients = 'many'\nsend_per_minute = -1\n"
        "[http]\nlisten = 'nowhere'\n[storage]\nmetadata_url = 'postgresql://db/mail'\n"
        "[typo_section]\nx = 1\n"
    )
    result = run_cli(tmp_path / "data", "--config", str(config), "domain", "list")
    assert result.returncode == 2
    for key in ("limits.max_recipients", "limits.send_per_minute", "http.listen", "typo_section"):
        assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

    result = run_cli(
        tmp_path / "data", "--config", str(tmp_path / "missing.toml"), "domain", "list"
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_domain_dkim_makes_one_key_and_prints_records_that_verify(
    tmp_path: Path, profile: Profile
) -> None:
    data = tmp_path / "data"
    storage = profile.storage(data)
    run_cli(data, "domain", "add", "example.com")
    month_before = f"mf{datetime.now(UTC):%Y%m}"
    first = run_cli(data, "domain", "dkim", "example.com", "--mx", "mx.example.com")
    assert first.returncode == 0, first.stderr
    assert "new key" in first.stderr
    records = first.stdout.splitlines()
    # The default selector names the month the key was made in (a run may
    # cross midnight at the end of one).
    selector = records[0].split("._domainkey.")[0]
    assert selector in {month_before, f"mf{datetime.now(UTC):%Y%m}"}
    assert [line.split("\t")[0] for line in records] == [
        f"{selector}._domainkey.example.com.",
        "example.com.",
        "_dmarc.example.com.",
        "example.com.",
    ]
    assert records[1].endswith('"v=spf1 mx -all"')
    assert records[3].endswith("MX\t10 mx.example.com.")

    # Asked again, it prints the same key rather than replacing a published one.
    again = run_cli(data, "domain", "dkim", "example.com", "--mx", "mx.example.com")
    assert again.returncode == 0
    assert again.stdout == first.stdout
    assert "already has a key" in again.stderr

    # The stored private key signs mail that verifies against the printed record.
    rotated = run_cli(data, "domain", "dkim", "example.com", "--selector", "s2", "--mx", "mx.x.y")
    assert rotated.returncode == 0, rotated.stderr
    txt = rotated.stdout.splitlines()[0].split("\tTXT\t")[1]
    published = "".join(part.strip('"') for part in txt.split('" "')).encode()

    async def stored_key() -> bytes:
        settings = load_settings(overrides={"data_dir": str(data), "storage": storage})
        runtime = await Runtime.open(settings)
        try:
            keys = await runtime.stores.directory.dkim_keys("example.com")
        finally:
            await runtime.close()
        assert [k.selector for k in keys] == ["s2", selector]  # newest first
        return keys[0].private_key_pem

    pem = asyncio.run(stored_key())
    mail = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    signed = sign(mail, domain="example.com", selector="s2", private_key_pem=pem)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: published)

    for bad, message in (
        (("nope.example",), "not a hosted domain"),
        (("example.com", "--selector", "bad selector"), "invalid DKIM selector"),
        (("example.com", "--selector", "s2"), "already has a key with selector s2"),
    ):
        refused = run_cli(data, "domain", "dkim", *bad)
        assert refused.returncode == 1
        assert message in refused.stderr
