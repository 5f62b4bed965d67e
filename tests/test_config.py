"""Configuration: defaults < TOML file < MAILFLEET_* environment < command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from mailfleet.config import ConfigError, Settings, load_settings


def test_layers_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "data_dir = '/from/file'\n[limits]\nmax_recipients = 7\nsend_per_minute = 9\n"
        "[[domains]]\nname = 'a.example'\nopen_signup = true\n"
    )
    settings = load_settings(config)
    assert settings.data_dir == Path("/from/file")
    assert settings.limits.max_recipients == 7
    assert settings.domains[0].name == "a.example"
    assert settings.storage_url("metadata_url") == "sqlite:////from/file/metadata.sqlite"
    assert settings.storage_url("blob_url") == "file:///from/file/blobs"

    monkeypatch.setenv("MAILFLEET_LIMITS__MAX_RECIPIENTS", "11")
    monkeypatch.setenv("MAILFLEET_DATA_DIR", "/from/env")
    settings = load_settings(config)
    assert settings.limits.max_recipients == 11
    assert settings.limits.send_per_minute == 9  # the file's, untouched by the env
    assert settings.data_dir == Path("/from/env")

    settings = load_settings(config, {"data_dir": "/from/cli", "http": {"listen": "0.0.0.0:80"}})
    assert settings.data_dir == Path("/from/cli")
    assert settings.http.listen == "0.0.0.0:80"


def test_every_section_can_be_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A section the environment cannot reach is silently ignored there: a
    # deployment's MAILFLEET_FILTERS__... would do nothing at all.
    defaults = Settings()
    for name, field in Settings.model_fields.items():
        value = getattr(defaults, name)
        if not isinstance(value, BaseModel):
            continue
        dumped = value.model_dump()
        numbers = [(k, v) for k, v in dumped.items() if isinstance(v, bool | int | float)]
        if numbers:
            key, default = numbers[0]
            changed = (not default) if isinstance(default, bool) else default + 1
        elif "listen" in dumped:  # a section of addresses only ([metrics])
            key, changed = "listen", "127.0.0.1:9999"
        else:  # words from a set ([logging])
            key, changed = "format", "json"
        monkeypatch.setenv(f"MAILFLEET_{name.upper()}__{key.upper()}", str(changed).lower())
        assert getattr(getattr(load_settings(None), name), key) == changed, (name, key, field)


def test_every_problem_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLEET_SMTP__LISTEN", "no-port")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"limits": {"max_recipients": 0}, "auth": {"argon2_time_cost": "x"}})
    problems = "\n".join(caught.value.problems)
    assert "smtp.listen" in problems
    assert "limits.max_recipients" in problems
    assert "auth.argon2_time_cost" in problems


@pytest.mark.parametrize(
    ("role", "url", "message"),
    [
        ("metadata_url", "mysql://db/mail", "expected one of"),
        ("blob_url", "gs://bucket", "expected one of"),
        ("queue_url", "ftp://x", "expected one of"),
    ],
)
def test_storage_urls_by_scheme(role: str, url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"storage": {role: url}})
    assert f"storage.{role}" in str(caught.value)
    assert message in str(caught.value)


def test_postgresql_metadata_with_shards() -> None:
    shards = [
        {"name": "s0", "url": "postgresql://h/s0", "replica_url": "postgresql://r/s0"},
        {"name": "s1", "url": "postgresql://h/s1"},
    ]
    settings = load_settings(
        None, {"storage": {"metadata_url": "postgresql://h/dir", "metadata_shards": shards}}
    )
    assert [s.name for s in settings.storage.metadata_shards] == ["s0", "s1"]
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"storage": {"metadata_shards": shards}})  # on SQLite
    assert "postgresql:// metadata_url" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            {
                "storage": {
                    "metadata_url": "postgresql://h/dir",
                    "metadata_shards": [shards[0], {**shards[1], "name": "s0", "url": "x://"}],
                }
            },
        )
    problems = "\n".join(caught.value.problems)
    assert "names must differ" in problems
    assert "metadata_shards.1.url" in problems
