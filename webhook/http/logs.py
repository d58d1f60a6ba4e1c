"""The guard's log lines: one JSON object per line on stderr, and the request path's cheap way to write one.

`configure_logging` sets up the `ollama_guard` logger (the CLI and the benchmarks call it once).
`log_fields(logger, level, msg, fields)` is what the request path calls for each denied, warned
or failed review: the same line `logger.log(level, msg, extra={"fields": fields})` would write
through `JsonFormatter`. While the logger is as `configure_logging` left it (its one handler a
`JsonLineHandler`, no filters, not propagating), the line goes straight to that handler's
stream under the handler's lock: no LogRecord, no handler chain (issue 17: ~12 µs a line through
`logging`, ~3 µs direct). Any other set-up (a test's capturing handler, an embedding program's
own handlers, a filter) takes the ordinary `logging` path, so what it sees is unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

#: `logging.getLevelName(level).lower()` for the levels the guard logs at
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


def millis(seconds: float) -> float:
    """`seconds` to the millisecond, as `round(seconds, 3)` gives it but ~10 × cheaper: `round`
    with digits formats the float as a decimal string, and each log line rounds twice (its time
    and its latency). The two can differ only in the last digit of a value halfway between two
    milliseconds."""
    return round(seconds * 1000) / 1000


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": millis(record.created),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(entry, default=str).decode()


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler with `JsonFormatter`, which `log_fields` may write to directly."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    def write_fields(self, level: int, msg: str, fields: Mapping[str, Any]) -> None:
        """The line `JsonFormatter` makes of a record at `level` with `msg` and these fields."""
        entry = {"ts": millis(time.time()), "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()}
        entry["msg"] = msg
        entry.update(fields)
        line = orjson.dumps(entry, default=str).decode() + self.terminator
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                stream = self.stream
                stream.write(line)
                stream.flush()  # what `StreamHandler.flush` does, under the lock already held
            except Exception:  # as StreamHandler.emit: a broken stream must not fail the request
                self.handleError(logging.makeLogRecord({"msg": msg, "levelno": level}))


def configure_logging(level: str = "INFO") -> None:
    """One JSON line per record on stderr. A record does not look up the calling source line,
    thread or process (the logging HOWTO's "Optimization": none of them is in the line, and each
    denied or warned review writes one)."""
    logging._srcfile = None  # documented: skips sys._getframe per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger("ollama_guard")
    root.handlers[:] = [JsonLineHandler()]
    root.setLevel(level.upper())
    root.propagate = False


def log_fields(logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any]) -> None:
    """`logger.log(level, msg, extra={"fields": fields})`, directly when nothing else is listening
    (see the module docstring); the caller has checked `logger.isEnabledFor(level)`."""
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters:
        handler = handlers[0]
        if type(handler) is JsonLineHandler and not handler.filters and level >= handler.level:
            handler.write_fields(level, msg, fields)
            return
    logger.log(level, msg, extra={"fields": fields})
