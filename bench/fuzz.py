"""The long form of the fuzzing CI runs briefly (issue 14, point 5): the same
properties with many more examples and a fresh random seed each run, and
schemathesis with a long time budget and its stateful phase.

Targets (``--only`` picks some; all by default):

- ``mime``: the MIME ingestion path on the corpus of
  tests/support/mail_corpus.py (tests/proto/test_ingest_fuzz.py's
  ``check_ingested``: never raises, raw mail kept whole);
- ``query``: search query parse → render → parse, from text and from trees
  (tests/search/test_query_fuzz.py);
- ``smtp``: SMTP sessions against a real smtp-in on loopback
  (tests/smtp/test_smtp_fuzz.py);
- ``api``: schemathesis against /openapi.json of a real server, signed in
  (tests/api/test_openapi_fuzz.py's command, long budget, stateful phase on);
- ``atheris``: coverage-guided fuzzing of ``parse_message`` with atheris, when
  it is installed (``.venv/bin/pip install atheris``; not a dev dependency:
  it is only wheels for some Pythons), for ``--atheris-runs`` inputs.

Prints, per target, what ran (examples, seconds, seed) and every failure with
the input that shows it; exits 1 when any target failed.

    .venv/bin/python bench/fuzz.py                       # everything, ~10 min
    .venv/bin/python bench/fuzz.py --only mime,query --examples 50000
    .venv/bin/python bench/fuzz.py --only api --api-seconds 900
    .venv/bin/python bench/fuzz.py --seed 1234           # repeat a run
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tests.api.test_openapi_fuzz import (  # noqa: E402
    existing_ids,
    run_schemathesis,
    schemathesis_command,
    schemathesis_config,
)
from tests.conftest import TEST_ROLES, Service, make_settings  # noqa: E402
from tests.proto.test_ingest_fuzz import check_ingested  # noqa: E402
from tests.search.test_query_fuzz import (  # noqa: E402
    query_text,
    test_parse_render_parse_round_trip,
    test_trees_render_to_queries_that_parse_back,
    trees,
)
from tests.smtp.test_smtp_fuzz import command, healthy_mail, run_session  # noqa: E402
from tests.support.mail_corpus import any_mail  # noqa: E402

from mailfleet.server import Server  # noqa: E402

TARGETS = ("mime", "query", "smtp", "api", "atheris")


@dataclass
class Outcome:
    target: str
    examples: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    note: str = ""


def _inner(test: Any) -> Callable[..., None]:
    """The plain function under a test's @given."""
    inner: Callable[..., None] = test.hypothesis.inner_test
    return inner


def run_property(
    outcome: Outcome,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    *,
    n: int,
    seed: int,
) -> None:
    """``check`` on ``n`` examples of ``strategy``; a failure is recorded with
    its shrunk input (hypothesis's notes), and the run goes on with the next target."""

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
    )
    @hypothesis_seed(seed)
    @given(strategy)
    def run(value: Any) -> None:
        outcome.examples += 1
        check(value)

    started = time.monotonic()
    try:
        run()
    except Exception as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        outcome.failures.append(f"{''.join(traceback.format_exception_only(exc)).strip()}\n{notes}")
    outcome.seconds += time.monotonic() - started


async def start_server(data: Path, overrides: dict[str, Any]) -> Service:
    server = await Server.open(make_settings(data, overrides), TEST_ROLES)
    await server.start()
    return Service(server)


async def fuzz_smtp(outcome: Outcome, n: int, seed: int) -> None:
    generous = 10**9
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-smtp-") as tmp:
        service = await start_server(
            Path(tmp) / "data",
            {
                "smtp": {
                    "connections_per_minute_per_ip": generous,
                    "messages_per_minute_per_ip": generous,
                }
            },
        )
        try:
            await service.user("alice")
            port = service.smtp_port
            sessions = st.lists(command(), min_size=1, max_size=20)
            await asyncio.to_thread(
                run_property, outcome, sessions, lambda c: run_session(port, c), n=n, seed=seed
            )
            try:
                await asyncio.to_thread(healthy_mail, port)
            except Exception as exc:
                outcome.failures.append(
                    f"the next client was not served after the fuzzing: {exc!r}"
                )
        finally:
            await service.close()


async def fuzz_api(outcome: Outcome, seconds: int, examples: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-api-") as tmp:
        service = await start_server(Path(tmp) / "data", {"realtime": {"long_poll_seconds": 1}})
        try:
            alice, bob = await service.user("alice"), await service.user("bob")
            config = Path(tmp) / "schemathesis.toml"
            config.write_text(schemathesis_config(*await existing_ids(alice, bob)))
            command_line = schemathesis_command(
                service, alice.token, config, seed=seed, max_examples=examples, max_seconds=seconds
            )
            phases = command_line.index("--phases") + 1
            command_line[phases] = "examples,coverage,fuzzing,stateful"
            started = time.monotonic()
            code, output = await run_schemathesis(command_line, Path(tmp))
            outcome.seconds = time.monotonic() - started
            summary = [line.strip() for line in output.splitlines() if "generated" in line]
            outcome.note = summary[-1] if summary else ""
            for line in output.splitlines():
                if line.strip().startswith(tuple("0123456789")) and "generated" in line:
                    outcome.examples = int(line.split()[0])
            if code != 0:
                outcome.failures.append(output[-8000:])
        finally:
            await service.close()


def fuzz_atheris(outcome: Outcome, runs: int) -> None:
    try:
        import atheris  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        outcome.note = "skipped: atheris is not installed (.venv/bin/pip install atheris)"
        return
    harness = (
        "import sys, atheris\n"
        "with atheris.instrument_imports():\n"
        "    from mailfleet.proto.mime import parse_message\n"
        "    from tests.proto.test_mime import check_types\n"
        "def one(data):\n"
        "    check_types(parse_message(data))\n"
        "atheris.Setup(sys.argv, one)\n"
        "atheris.Fuzz()\n"
    )
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-atheris-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        from tests.support.mail_corpus import SEEDS

        for name, raw in SEEDS:
            (corpus / name).write_bytes(raw)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", harness, f"-runs={runs}", "-max_len=65536", str(corpus)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
        )
        outcome.seconds = time.monotonic() - started
        outcome.examples = runs
        outcome.note = (done.stderr.strip().splitlines() or [""])[-1]
        if done.returncode != 0:
            outcome.failures.append(done.stderr[-8000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--examples", type=int, default=20_000, help="per property (mime, query)")
    parser.add_argument("--smtp-sessions", type=int, default=3_000)
    parser.add_argument("--api-seconds", type=int, default=300)
    parser.add_argument("--api-examples", type=int, default=200, help="per API operation")
    parser.add_argument("--atheris-runs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    args = parser.parse_args()
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(chosen) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    # The servers log every bogus SMTP command and odd request; errors still show.
    logging.disable(logging.WARNING)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"bench/fuzz.py seed {seed}; targets {', '.join(chosen)}", flush=True)
    outcomes: list[Outcome] = []
    for target in chosen:
        outcome = Outcome(target)
        outcomes.append(outcome)
        print(f"-- {target} ...", flush=True)
        if target == "mime":
            run_property(outcome, any_mail(), check_ingested, n=args.examples, seed=seed)
        elif target == "query":
            round_trip = _inner(test_parse_render_parse_round_trip)
            run_property(outcome, query_text, round_trip, n=args.examples, seed=seed)
            back = _inner(test_trees_render_to_queries_that_parse_back)
            run_property(outcome, trees, back, n=args.examples, seed=seed)
        elif target == "smtp":
            asyncio.run(fuzz_smtp(outcome, args.smtp_sessions, seed))
        elif target == "api":
            asyncio.run(fuzz_api(outcome, args.api_seconds, args.api_examples, seed))
        elif target == "atheris":
            fuzz_atheris(outcome, args.atheris_runs)
        status = "FAILED" if outcome.failures else "ok"
        print(
            f"   {target}: {status}, {outcome.examples} examples in {outcome.seconds:.1f} s"
            + (f" ({outcome.note})" if outcome.note else ""),
            flush=True,
        )
        for failure in outcome.failures:
            print("   " + failure.replace("\n", "\n   "), flush=True)
    failed = [o.target for o in outcomes if o.failures]
    print(f"seed {seed}: {len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
