"""The Prometheus alert rules and the Grafana dashboard in ``deploy/``
(issue 15) against the service itself: the rules pass ``promtool``; every
metric the rules and the dashboard name is one the service exports; and a
real Prometheus (Debian's) scrapes a running service, evaluates every rule
without error and answers every dashboard query."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service
from tests.support.tools import require_program
from tests.test_restart import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "mailfleet.json"


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def named_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bmailfleet_[a-z0-9_]+\b", text))


async def exported(service: Service) -> set[str]:
    """Every series name the service's /metrics can show: families are
    listed (HELP and TYPE) before any sample has a label set."""
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        text = (await client.get("/metrics")).text
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
    return names


def test_the_alert_rules_pass_promtool() -> None:
    promtool = require_program("promtool", "apt-get install prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout


async def test_every_metric_the_rules_and_dashboard_name_is_exported(service: Service) -> None:
    have = await exported(service)
    for where, text in (("alerts.yml", RULES.read_text()), *(
        ("mailfleet.json", q) for q in dashboard_queries()
    )):  # fmt: skip
        missing = named_metrics(text) - have
        assert not missing, f"{where} names metrics the service does not export: {missing}"
    # And the checks can fail: a misspelt name is caught.
    assert named_metrics("rate(mailfleet_bounce_total[5m])") - have == {"mailfleet_bounce_total"}


@pytest.mark.timeout(90)
async def test_prometheus_scrapes_the_service_and_answers_every_rule_and_panel(
    service: Service, tmp_path: Path
) -> None:
    prometheus = require_program("prometheus", "apt-get install prometheus")
    port = free_port()
    host, http = service.server.http_address
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f'rule_files: ["{RULES}"]\n'
        "scrape_configs:\n  - job_name: mailfleet\n"
        f'    static_configs:\n      - targets: ["{host}:{http}"]\n'
    )
    process = await asyncio.create_subprocess_exec(
        prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = time.monotonic() + 60

            async def poll(path: str, **params: str) -> dict[str, object] | None:
                try:
                    answer = await client.get(f"{api}/{path}", params=params)
                except httpx.TransportError:
                    return None
                if answer.status_code == 503:
                    return None  # still starting: a plain-text "Service Unavailable"
                body: dict[str, object] = answer.json()
                assert body["status"] == "success", body
                return body

            # Scraped, and every rule evaluated at least once without error.
            while True:
                assert time.monotonic() < deadline, "Prometheus never scraped and evaluated"
                up = await poll("query", query='up{job="mailfleet"}')
                rules = await poll("rules")
                if up and rules:
                    ups = up["data"]["result"]  # type: ignore[index]
                    groups = rules["data"]["groups"]  # type: ignore[index]
                    evaluated = [r for g in groups for r in g["rules"]]
                    if (
                        ups
                        and ups[0]["value"][1] == "1"
                        and len(evaluated) == 9
                        and all(r["lastEvaluation"][:4] != "0001" for r in evaluated)
                    ):
                        break
                await asyncio.sleep(0.25)
            assert all(r["health"] == "ok" for r in evaluated), evaluated
            # No alert fires on a healthy, idle service.
            firing = [r["name"] for r in evaluated if r["state"] == "firing"]
            assert not firing, firing

            for query in dashboard_queries():
                answer = await poll("query", query=query)
                assert answer is not None, query
            backends = await poll("query", query="min by (role) (mailfleet_backend_up)")
            assert backends is not None
            roles = {r["metric"]["role"]: r["value"][1] for r in backends["data"]["result"]}  # type: ignore[index]
            assert roles and set(roles.values()) == {"1"}, roles
    finally:
        process.terminate()
        _, errors = await process.communicate()
    assert process.returncode in (0, -15), errors
