"""Structured logs and the correlation id that follows one mail (decision 0029).

Each process calls ``configure`` once at start (``mailfleet serve``, worker-in's
child process): from then on every line is one JSON object (or a readable
line on a terminal) with ``timestamp``, ``level``, ``logger``, ``event`` and
the bound context, whether it comes from a structlog logger of ours or from
a stdlib ``logging`` logger (ours or a library's, through structlog's
``ProcessorFormatter``). Both go to one file descriptor opened ``O_APPEND``
in whole lines (``_Sink``), so several processes may append to one file.

A mail's hops (received, sent, queued, stored, delivered, deferred, bounced)
are logged by ``hop`` loggers (``get_logger``), one line per hop, each naming
the mail's correlation id under ``trace_id``: minted once per mail (an SMTP
transaction, a ``POST /v1/messages``), carried in its queue items' payload
(``TRACE_KEY``) so that worker-in and worker-out log under it in whatever
process they run. ``mailfleet trace`` (``cli/trace.py``) reads them back.

The hot path pays for what it writes only: a hop line below the level is
one comparison, a line is built by two processors (structlog's contextvars
merge, then ``_hop_json``: timestamp, level, logger, event and ``orjson``)
and handed to the sink's thread, which writes what is pending every tenth
of a second; no stack inspection, no stdlib ``LogRecord`` and no structlog
bound-logger dispatch (``HopLogger``).
Until ``configure`` runs (other commands, tests in one process) hop lines
at info are dropped and stdlib logging is left as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from mailfleet.config import LoggingSettings
from mailfleet.ids import new_id

TRACE_KEY = "trace_id"
"""The correlation id's name, in log lines and in queue item payloads."""


def new_trace_id() -> str:
    """A fresh correlation id: 63-bit, time-ordered, as hex."""
    return f"{new_id():x}"


class _State:
    """What ``configure`` decided, read by every hop line."""

    level: ClassVar[int] = logging.WARNING  # until configured: hop lines at info are dropped
    processors: ClassVar[list[Processor]] = []
    sink: ClassVar[_Sink | None] = None


class HopLogger:
    """One line per hop of a mail, under ``name`` (the role's logger name).

    The line goes through the same structlog processors as any structlog
    logger's would (``configure``), called directly: structlog's bound
    logger dispatch costs more than the line itself (3.5 us of 6.5 on the
    machine of docs/benchmarks.md), and the DATA path writes two of these
    per mail. Until ``configure`` runs, warnings go to stdlib logging."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def info(self, event: str, **fields: Any) -> None:
        if _State.level <= logging.INFO:
            self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        if _State.level <= logging.WARNING:
            self._emit("warning", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        sink = _State.sink
        if sink is None:
            shown = " ".join(f"{k}={v}" for k, v in fields.items())
            logging.getLogger(self.name).warning("%s %s", event, shown)
            return
        fields["logger_name"] = self.name
        fields["event"] = event
        line: Any = fields
        for processor in _State.processors:
            line = processor(None, level, line)
        sink.write(line)


def get_logger(name: str) -> HopLogger:
    """The hop logger of ``name`` (``mailfleet.smtp_in``...); a module makes
    one at import, before ``configure``."""
    return HopLogger(name)


FLUSH_SECONDS = 0.1


class _Sink:
    """Whole lines to a file descriptor opened ``O_APPEND``, so that lines of
    several processes never cut into each other.

    Hop lines (``write``) are only appended to a list here; a thread of the
    sink's writes what is pending every ``FLUSH_SECONDS`` in one ``os.write``.
    A write on the event loop's thread releases the GIL, and the stores'
    writer threads take it: one ``os.write`` per line cost the MX 5-10% more
    CPU per mail (docs/benchmarks.md), twenty times the line itself. Records
    of stdlib loggers (warnings, errors: rare, and wanted at once even if the
    process dies next) are written at once, after what is pending; at exit
    everything is. A process killed outright loses its last tenth of a second.
    Also the structlog "logger" of structlog's own loggers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: deque[bytes] = deque()
        self._lock = threading.Lock()
        threading.Thread(target=self._flush_often, name="log flush", daemon=True).start()
        atexit.register(self.flush)

    def write(self, line: str | bytes) -> None:
        self._pending.append(_as_line(line))

    def write_now(self, line: str | bytes) -> None:
        with self._lock:
            self._write(self._take() + _as_line(line))

    def flush(self) -> None:
        with self._lock:
            self._write(self._take())

    def _take(self) -> bytes:
        pending, lines = self._pending, []
        with contextlib.suppress(IndexError):
            while True:
                lines.append(pending.popleft())  # atomic against append
        return b"".join(lines)

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.fd, data) :]

    def _flush_often(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            if self._pending:
                with contextlib.suppress(OSError):
                    self.flush()

    msg = debug = info = warning = warn = error = critical = exception = fatal = write


def _as_line(line: str | bytes) -> bytes:
    return (line.encode("utf-8", "replace") if isinstance(line, str) else line) + b"\n"


class _SinkHandler(logging.Handler):
    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write_now(self.format(record))
        except Exception:
            self.handleError(record)


_second: list[Any] = [-1, ""]  # the last second formatted, and its text


def timestamp(when: float) -> str:
    """ISO 8601 in UTC to the microsecond, as ``datetime.isoformat`` writes
    it; the date and time of day formatted once a second."""
    second = int(when)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    micro = round((when - second) * 1_000_000)
    if micro > 999_999:  # rounded up to the next second
        return datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds")
    return f"{_second[1]}.{micro:06d}+00:00"


def _stamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger and event first, the rest after, for a hop
    line or a stdlib record alike."""
    record = event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    if isinstance(record, logging.LogRecord):
        when, level, name = record.created, record.levelname.lower(), record.name
    else:
        when = time.time()
        level = "error" if method_name == "exception" else method_name
        name = event_dict.pop("logger_name", "")
    out = {
        "timestamp": timestamp(when),
        "level": level,
        "logger": name,
        "event": event_dict.pop("event", ""),
    }
    out.update(event_dict)
    return out


def _hop_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    """A hop line in one step (the hot path's): ``_stamp`` and the JSON."""
    return orjson.dumps(
        {
            "timestamp": timestamp(time.time()),
            "level": method_name,
            "logger": event_dict.pop("logger_name", ""),
            "event": event_dict.pop("event", ""),
            **event_dict,
        },
        default=str,
    )


def _json_text(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def configure(settings: LoggingSettings) -> None:
    """Once per process, at start: where lines go, in which format, from
    which level. Replaces the root logger's handlers."""
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    else:
        fd = sys.stderr.fileno()
    terminal = os.isatty(fd)
    as_json = settings.format == "json" or (settings.format == "auto" and not terminal)
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    sink = _Sink(fd)

    console: Processor = structlog.dev.ConsoleRenderer(colors=terminal)
    processors: list[Processor] = (
        [structlog.contextvars.merge_contextvars, _hop_json]
        if as_json
        else [structlog.contextvars.merge_contextvars, _stamp, console]
    )
    _State.level, _State.processors, _State.sink = level, processors, sink
    # structlog's own loggers, should a module use one, write the same lines.
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: sink,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.format_exc_info,
        ],
        processors=[_stamp, _json_text if as_json else console],
    )
    handler = _SinkHandler(sink)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries stay at warning (aiosmtpd's "mail.log" says a line per
    # command at info); mailfleet's own loggers follow the setting.
    root.setLevel(logging.WARNING)
    logging.getLogger("mailfleet").setLevel(level)
    # No LogRecord asks for its thread and process names: nothing shows them.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def trace_of(payload: dict[str, Any], fallback: str = "") -> str:
    """The correlation id a queue item carries (items queued before there was
    one carry none: then ``fallback``)."""
    return str(payload.get(TRACE_KEY) or fallback)
