"""Structured logs and the correlation id that follows one mail (decision 0029).

Each process calls ``configure`` once at start (``mailfleet serve``, worker-in's
child process): from then on every line is one JSON object (or a readable
line on a terminal) with ``timestamp``, ``level``, ``logger``, ``event`` and
the bound context, whether it comes from a structlog logger of ours or from
a stdlib ``logging`` logger (ours or a library's, through structlog's
``ProcessorFormatter``). Both write whole lines with one ``write`` each on
the same file descriptor, so several processes may append to one file.

A mail's hops (received, sent, queued, stored, delivered, deferred, bounced)
are logged by ``hop`` loggers (``get_logger``), one line per hop, each naming
the mail's correlation id under ``trace_id``: minted once per mail (an SMTP
transaction, a ``POST /v1/messages``), carried in its queue items' payload
(``TRACE_KEY``) so that worker-in and worker-out log under it in whatever
process they run. ``mailfleet trace`` (``cli/trace.py``) reads them back.

The hot path pays for what it writes only: a hop logger below the level is
a no-op method (structlog's filtering logger), the line is built by two
processors and ``orjson``, with no stack inspection and no stdlib
``LogRecord``. Until ``configure`` runs (library use, tests in one process)
hop lines are dropped and stdlib logging is left as it was.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from mailfleet.config import LoggingSettings
from mailfleet.ids import new_id

TRACE_KEY = "trace_id"
"""The correlation id's name, in log lines and in queue item payloads."""


def new_trace_id() -> str:
    """A fresh correlation id: 63-bit, time-ordered, as hex."""
    return f"{new_id():x}"


def get_logger(name: str) -> FilteringBoundLogger:
    """A hop logger for ``name`` (``mailfleet.smtp_in``...); lazy, so that a
    module may make one at import, before ``configure``."""
    return cast(FilteringBoundLogger, structlog.get_logger(logger_name=name))


class _Sink:
    """A file descriptor that takes whole lines, one ``os.write`` each: with
    ``O_APPEND`` (or a pipe, under PIPE_BUF) lines from several threads and
    processes never interleave. Also the structlog "logger" of hop lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, line: str | bytes) -> None:
        data = (line.encode("utf-8", "replace") if isinstance(line, str) else line) + b"\n"
        while data:
            data = data[os.write(self.fd, data) :]

    msg = debug = info = warning = warn = error = critical = exception = fatal = write


class _SinkHandler(logging.Handler):
    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record))
        except Exception:
            self.handleError(record)


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
        "timestamp": datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds"),
        "level": level,
        "logger": name,
        "event": event_dict.pop("event", ""),
    }
    out.update(event_dict)
    return out


def _json_bytes(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    return orjson.dumps(event_dict, default=str)


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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _stamp,
            _json_bytes if as_json else console,
        ],
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


def _unconfigured() -> None:
    """Before ``configure``: hop lines (info) are no-ops, and anything at
    warning or above is handed to stdlib logging as it stands."""

    def to_stdlib(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        name = str(event_dict.pop("logger_name", "mailfleet"))
        event = event_dict.pop("event", "")
        rest = " ".join(f"{k}={v!r}" for k, v in event_dict.items())
        logging.getLogger(name).log(
            logging.getLevelNamesMapping().get(method_name.upper(), logging.ERROR),
            "%s %s",
            event,
            rest,
        )
        raise structlog.DropEvent

    structlog.configure(
        processors=[to_stdlib],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def trace_of(payload: dict[str, Any], fallback: str = "") -> str:
    """The correlation id a queue item carries (items queued before there was
    one carry none: then ``fallback``)."""
    return str(payload.get(TRACE_KEY) or fallback)


if not structlog.is_configured():
    _unconfigured()
