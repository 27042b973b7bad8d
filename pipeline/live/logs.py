"""Structured logs of the monitor: one JSON object per line, with time, level, stage, camera and message.

`configure_logging(stage)` is the one place logging is set up, once in each process of the monitor: each
Ray actor as it starts (an actor has a process of its own, whose stage it is); the driver, which may run in a
process that does more, for the time the monitor runs (`structured_logs`). Records go to stderr (Ray keeps an
actor's in its worker's log file). A record's `stage` is its process's unless it names one
(`extra={"stage": ...}`: the driver telling about a stage); `camera` is there when a record is about one
(`extra={"camera": ...}`), and other `extra` fields (query, alert, latency, ...) go along as they are. The
project's own loggers (pipeline, actors, jobs) log from INFO up, libraries from WARNING up.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

# The attributes every log record has: the others on a record came from its `extra`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
PROJECT_LOGGERS = ("pipeline", "actors", "jobs")


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time (ISO 8601 UTC), level, stage, camera (when given), message, logger,
    the record's other `extra` fields, and its exception's traceback as `error`."""

    def __init__(self, stage: str | None = None):
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        entry = {"time": at.replace("+00:00", "Z"), "level": record.levelname.lower(), "stage": self.stage}
        # Underscored attributes are other libraries' bookkeeping (Ray stamps its workers' records so).
        extra = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}
        entry.update({key: value for key, value in extra.items() if not key.startswith("_")})
        entry["message"] = record.getMessage()
        entry["logger"] = record.name
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)  # json escapes newlines: a traceback stays on its line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a redirection made after logging was set up)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def configure_logging(stage: str) -> None:
    """This process logs as `stage`, one JSON object per line on stderr; called again, it replaces its handler."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(stage))
    root.addHandler(handler)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


@contextmanager
def structured_logs(stage: str) -> Iterator[None]:
    """`configure_logging(stage)` within the block, the process's logging as it was after it."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    levels = {name: logging.getLogger(name).level for name in PROJECT_LOGGERS}
    configure_logging(stage)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
