"""Issue 13's filter benchmark: what one ``worker-in`` achieves with the filter
pipeline, with and without rspamd and clamd, on a mix of 4 KiB text mails
and 500 KiB mails carrying a PDF-like attachment.

For each configuration, in this one process, on a fresh embedded data
directory (``Runtime.open`` as the tests' servers do, no listeners):

1. ``--mails`` mails (``--big-share`` of them large) are accepted onto the
   ``incoming`` queue with ``IncomingService.accept`` (raw blob + queue item,
   as smtp-in does after DATA). Not measured.
2. **drain**: ONE ``IncomingWorker`` takes them off in its batches
   (``handle_batch``: parse, filters, parts, Bayes, one ``store_messages``
   and one ack per batch) until the queue is empty. Measured: mails/s, and
   this process's CPU seconds per 1,000 mails (``time.process_time``: every
   thread of the process, so SQLite's writer thread and ``to_thread`` work
   count). The worker loop is driven here rather than by ``start()`` so that
   the end is exact and no idle wait is timed; it is the same fetch and
   ``handle_batch`` as ``IncomingWorker._run``.
3. **pipeline alone**: ``FilterPipeline.run`` on the same mails (the raw as
   stored, trace headers included), ``--batch`` at a time concurrently as
   ``handle_batch`` runs them, no storage: the floor of the drain and the
   filters' share of it. It includes parsing the mail, which the built-in
   rules need (present in every configuration).

Configurations: ``builtin`` (the built-in rules and the attachment policy,
no outside service), ``+rspamd``, ``+clamd``, ``+both``. Sender
authentication is off in all of them: it runs at SMTP time (decision 0019)
and its result travels on the queue, so worker-in does not run it; it also
needs DNS, which this machine does not have. Bayes is on, as by default, on
an untrained account (it tokenizes and reads the statistics, and has no
opinion yet).

rspamd and clamd are started once by ``tests.support`` (their own on
loopback: rspamd with Debian's stock rules and DNS pointed at a port nobody
answers, so network checks fail as on an offline host; clamd with the tests'
two signatures, on its unix socket). Their own CPU seconds per 1,000 mails
are read from ``/proc`` around each phase and shown beside ours: on two
cores they compete with the worker.

    .venv/bin/python bench/filter_throughput.py
    .venv/bin/python bench/filter_throughput.py --mails 500 --configs builtin,+rspamd

Every configuration is measured ``--rounds`` times in turn (builtin, +rspamd,
+clamd, +both, then again) and the median is shown, with each ratio to the
builtin-only figure of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.clamd import Clamd, running_clamd
from tests.support.rspamd import RspamdServer

from mailfleet.config import load_settings
from mailfleet.delivery.incoming import INCOMING, Envelope, IncomingWorker
from mailfleet.filters.pipeline import FilterPipeline
from mailfleet.runtime import Runtime

DOMAIN = "example.com"
RCPT = f"reader@{DOMAIN}"
TICKS = os.sysconf("SC_CLK_TCK")
CONFIGS = ("builtin", "+rspamd", "+clamd", "+both")

# Ordinary office words, for text that reads like mail to a spam filter.
_WORDS = """
meeting quarter budget review draft schedule project team update customer
contract invoice delivery shipment warehouse report figures forecast agenda
minutes proposal approval deadline release version feedback design room
Thursday Monday afternoon morning lunch travel hotel conference slides numbers
revenue costs margin supplier order account please thanks regards attached
below above question answer issue ticket
"""
WORDS = tuple(_WORDS.split())
SENDER_DOMAINS = ("partner.example", "supplier.example", "university.example", "news.example")


# -- the mails ---------------------------------------------------------------------


def prose(rng: random.Random, size: int) -> str:
    """Plain sentences of ordinary words, about ``size`` bytes, in lines of
    under 78 characters (7bit text/plain, as most clients send)."""
    lines: list[str] = []
    line: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(WORDS)
        if sum(len(w) + 1 for w in line) + len(word) > 72:
            text = " ".join(line)
            lines.append(text[0].upper() + text[1:] + ".")
            total += len(lines[-1]) + 1
            line = []
        line.append(word)
    return "\n".join(lines) + "\n"


def pdf_like(rng: random.Random, size: int) -> bytes:
    """A small but well-formed PDF of about ``size`` bytes: a compressed text
    page and a scanned-page image (JPEG-like bytes, ``/DCTDecode``), as a
    scan attached to a mail is. Every one differs: clamd caches the results
    of content it has seen (by hash), and identical attachments would be
    scanned once."""
    page = zlib.compress(f"BT /F1 12 Tf 72 720 Td ({prose(rng, 400)[:200]}) Tj ET".encode())
    image = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(max(0, size - 1200)) + b"\xff\xd9"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /XObject << /Im1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(page), page),
        b"<< /Type /XObject /Subtype /Image /Width 1700 /Height 2200 /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n%s\nendstream"
        % (len(image), image),
    ]
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def make_mail(rng: random.Random, n: int, big: bool, text_size: int, big_size: int) -> bytes:
    """One mail as a client sends it: Date, Message-ID, MIME structure, a
    link as ordinary mail has (rspamd looks its host up); the large ones
    multipart/mixed with a short text and a PDF, ``big_size`` bytes in all
    (base64 makes the attachment 4/3 of its size on the wire)."""
    domain = rng.choice(SENDER_DOMAINS)
    sender = f"{rng.choice(['anna', 'ben', 'chloe', 'dev', 'erik'])}.{n}@{domain}"
    message = EmailMessage()
    message["From"] = f"Sender {n} <{sender}>"
    message["To"] = f"Reader <{RCPT}>"
    message["Subject"] = f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} #{n}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(f"b{n}", domain=domain)
    link = f"https://www.{domain}/docs/{n}"
    if not big:
        # The headers and greeting take about 420 bytes of the mail's size.
        body = prose(rng, text_size - 420)
        message.set_content(f"Hello,\n\nSee {link} for the details.\n\n" + body)
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    message.set_content(f"Hello,\n\nthe scan is attached; also at {link}.\n\n" + prose(rng, 600))
    # base64 is 4/3 of the data, in lines of 76 characters plus CRLF; the
    # headers and the text part take about 1,500 bytes.
    attachment = pdf_like(rng, (big_size - 1500) * 3 * 76 // (4 * 78))
    message.add_attachment(
        attachment, maintype="application", subtype="pdf", filename=f"scan-{n}.pdf"
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def make_mix(count: int, big_share: float, text_size: int, big_size: int) -> list[bytes]:
    """``count`` mails, the large ones spread evenly through the sequence
    (so each worker batch has its share), from a fixed seed."""
    rng = random.Random(13)
    every = round(1 / big_share) if big_share > 0 else 0
    return [
        make_mail(rng, n, bool(every) and n % every == every - 1, text_size, big_size)
        for n in range(count)
    ]


def envelope(n: int, raw: bytes) -> Envelope:
    sender = raw.split(b"<", 2)[1].split(b">", 1)[0].decode()
    # TEST-NET addresses: rspamd asks its RBLs about them (and gets no answer).
    return Envelope(sender, [RCPT], f"192.0.2.{n % 250 + 1}", "mail.partner.example", False)


# -- the services' CPU -------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its live descendants, plus what its
    reaped children used: rspamd's scanning is done by the worker its main
    process forks."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    ticks = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(pid)
            ticks += sum(int(f) for f in fields[11:15])
        pending += [child for child, parent in parents.items() if parent == pid]
    return ticks / TICKS


@dataclass
class Services:
    rspamd: RspamdServer | None = None
    clamd: Clamd | None = None

    def cpu(self) -> dict[str, float]:
        seen = {}
        if self.rspamd is not None and self.rspamd._process is not None:
            # The helper keeps its Popen private; the pid is all we read.
            seen["rspamd"] = tree_cpu(self.rspamd._process.pid)
        if self.clamd is not None and self.clamd.process is not None:
            seen["clamd"] = tree_cpu(self.clamd.process.pid)
        return seen


# -- one configuration ---------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    cpu: float  # this process
    service_cpu: dict[str, float] = field(default_factory=dict)

    def rate(self, mails: int) -> float:
        return mails / self.seconds

    def per_1000(self, mails: int) -> float:
        return self.cpu * 1000 / mails


@contextlib.contextmanager
def measured(services: Services, into: list[Measured]) -> Iterator[None]:
    before = services.cpu()
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = services.cpu()
    into.append(Measured(wall, cpu, {k: after[k] - before[k] for k in after if k in before}))


def settings_for(config: str, data_dir: Path, services: Services) -> Any:
    filters: dict[str, Any] = {"sender_auth": False, "rspamd_url": "", "clamd": ""}
    if config in ("+rspamd", "+both"):
        assert services.rspamd is not None
        filters["rspamd_url"] = services.rspamd.url
    if config in ("+clamd", "+both"):
        assert services.clamd is not None
        filters["clamd"] = services.clamd.unix_url
    return load_settings(
        None,
        {
            "data_dir": str(data_dir),
            "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1},
            "domains": [{"name": DOMAIN, "open_signup": True}],
            "filters": filters,
        },
    )


EXPECTED = {
    "builtin": ["builtin", "attachments"],
    "+rspamd": ["builtin", "rspamd", "attachments"],
    "+clamd": ["builtin", "attachments", "clamav"],
    "+both": ["builtin", "rspamd", "attachments", "clamav"],
}


async def run_config(
    config: str, mails: list[bytes], services: Services, batch: int, warmup: int
) -> tuple[Measured, Measured, Counter[str]]:
    with tempfile.TemporaryDirectory(prefix="mf-fbench-") as scratch:
        runtime = await Runtime.open(settings_for(config, Path(scratch) / "data", services))
        try:
            incoming = runtime.incoming
            names = [f.name for f in incoming.filters.filters]
            # The environment can set [filters] too (MAILFLEET_FILTERS__...):
            # make sure the pipeline is the one this row claims to measure.
            if names != EXPECTED[config]:
                raise SystemExit(f"{config}: the pipeline has {names}, not {EXPECTED[config]}")
            account = await runtime.accounts.sign_up(RCPT, "benchmark password", "Reader")
            envelopes = [envelope(n, raw) for n, raw in enumerate(mails)]
            # Warm-up: rspamd compiles its rules' Lua and regexes on first use.
            for raw in mails[:warmup]:
                await incoming.filters.run(
                    await incoming.mail_to_check(
                        raw,
                        mail_from="",
                        recipients=(RCPT,),
                        client_ip="192.0.2.1",
                        helo="warm.example",
                    )
                )
            queue_ids = []
            for env, raw in zip(envelopes, mails, strict=True):
                queue_ids.append(await incoming.accept(env, raw))

            drain: list[Measured] = []
            worker = IncomingWorker(incoming, runtime.stores.queue)
            queue = runtime.stores.queue
            with measured(services, drain):
                while items := await queue.fetch(INCOMING, limit=worker.batch, timeout=0):
                    await worker.handle_batch(items)
            folders = {
                f.role: f.total for f in await runtime.stores.mailbox.list_folders(account.id)
            }
            left = await queue.list(INCOMING, limit=10)
            errors = await queue.list("error", limit=10)
            if left or errors or folders["inbox"] + folders["junk"] != len(mails):
                raise SystemExit(
                    f"{config}: not all delivered: folders {folders}, {len(left)} left on the"
                    f" queue, {len(errors)} in error ({[e.payload.get('error') for e in errors]})"
                )
            verdicts = Counter({"inbox": folders["inbox"], "junk": folders["junk"]})

            # The same mails, as stored (with smtp-in's trace headers), through
            # the pipeline alone.
            now = datetime.now(UTC)
            stored = [
                incoming.trace_headers(env, qid, now) + raw
                for env, qid, raw in zip(envelopes, queue_ids, mails, strict=True)
            ]
            pipeline: FilterPipeline = incoming.filters
            alone: list[Measured] = []
            with measured(services, alone):
                for start in range(0, len(stored), batch):
                    chunk = range(start, min(start + batch, len(stored)))
                    checks = [
                        incoming.mail_to_check(
                            stored[i],
                            mail_from=envelopes[i].mail_from,
                            recipients=(RCPT,),
                            client_ip=envelopes[i].client_ip,
                            helo=envelopes[i].helo,
                        )
                        for i in chunk
                    ]
                    to_check = await asyncio.gather(*checks)
                    await asyncio.gather(*(pipeline.run(m) for m in to_check))
            return drain[0], alone[0], verdicts
        finally:
            await runtime.close()


# -- report ------------------------------------------------------------------------


def median_of(runs: list[Measured], value: Callable[[Measured], float]) -> float:
    return statistics.median(value(m) for m in runs)


def report(results: dict[str, list[tuple[Measured, Measured, Counter[str]]]], mails: int) -> None:
    def rate(m: Measured) -> float:
        return m.rate(mails)

    def cpu(m: Measured) -> float:
        return m.per_1000(mails)

    def service(name: str) -> Callable[[Measured], float]:
        return lambda m: m.service_cpu.get(name, 0.0) * 1000 / mails

    base = results.get("builtin")
    print()
    print(
        f"{'configuration':<10} {'phase':<9} {'mails/s':>9} {'ratio':>6} {'CPU s/1k':>9}"
        f" {'ratio':>6} {'rspamd s/1k':>12} {'clamd s/1k':>11}   runs (mails/s)"
    )
    for config, runs in results.items():
        for phase in ("drain", "pipeline"):
            measured_runs = [r[0] if phase == "drain" else r[1] for r in runs]
            r, c = median_of(measured_runs, rate), median_of(measured_runs, cpu)
            base_runs = [b[0] if phase == "drain" else b[1] for b in base] if base else None
            ratio_r = f"{r / median_of(base_runs, rate):6.2f}" if base_runs else "     -"
            ratio_c = f"{c / median_of(base_runs, cpu):6.2f}" if base_runs else "     -"
            each = ", ".join(f"{rate(m):,.0f}" for m in measured_runs)
            print(
                f"{config:<10} {phase:<9} {r:9,.1f} {ratio_r} {c:9.2f} {ratio_c}"
                f" {median_of(measured_runs, service('rspamd')):12.2f}"
                f" {median_of(measured_runs, service('clamd')):11.2f}   {each}"
            )
    print()
    for config, runs in results.items():
        print(f"{config:<10} delivered to: " + "; ".join(str(dict(r[2])) for r in runs))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mails", type=int, default=2000, help="mails per configuration")
    parser.add_argument("--big-share", type=float, default=0.1, help="share of large mails")
    parser.add_argument("--text-size", type=int, default=4096, help="bytes of a text mail's body")
    parser.add_argument("--big-size", type=int, default=500 * 1024, help="bytes of a large mail")
    parser.add_argument("--batch", type=int, default=64, help="pipeline-alone concurrency")
    parser.add_argument("--warmup", type=int, default=20, help="mails through the filters first")
    parser.add_argument("--rounds", type=int, default=1, help="each configuration this often")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configurations {sorted(unknown)}")

    began = time.monotonic()
    mails = make_mix(args.mails, args.big_share, args.text_size, args.big_size)
    sizes = [len(m) for m in mails]
    large = [s for s in sizes if s > 100_000]
    small = [s for s in sizes if s <= 100_000]
    print(
        f"{len(mails)} mails: {len(small)} text of {statistics.mean(small):,.0f} bytes on average,"
        f" {len(large)} with a PDF of {statistics.mean(large) if large else 0:,.0f} bytes;"
        f" {sum(sizes) / 2**20:,.1f} MiB in all"
    )
    services = Services()
    with contextlib.ExitStack() as stack:
        if any(c in ("+rspamd", "+both") for c in configs):
            started = time.monotonic()
            services.rspamd = stack.enter_context(RspamdServer())
            print(f"rspamd on {services.rspamd.url} in {time.monotonic() - started:.1f} s")
        if any(c in ("+clamd", "+both") for c in configs):
            services.clamd = stack.enter_context(running_clamd())
            print(f"clamd on {services.clamd.unix_url}")
        results: dict[str, list[tuple[Measured, Measured, Counter[str]]]] = {c: [] for c in configs}
        for round_ in range(args.rounds):
            for config in configs:
                drain, alone, verdicts = await run_config(
                    config, mails, services, args.batch, args.warmup
                )
                results[config].append((drain, alone, verdicts))
                print(
                    f"round {round_ + 1} {config:<8} drain {drain.rate(len(mails)):8,.1f}/s"
                    f" {drain.per_1000(len(mails)):6.2f} CPU s/1k;"
                    f" pipeline {alone.rate(len(mails)):8,.1f}/s"
                    f" {alone.per_1000(len(mails)):6.2f} CPU s/1k",
                    flush=True,
                )
        report(results, len(mails))
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
