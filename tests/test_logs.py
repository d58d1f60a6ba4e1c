"""The guard's JSON log lines: the direct path of `log_fields` writes what `logging` would."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.http.logs import JsonFormatter, JsonLineHandler, configure_logging, log_fields, millis

FIELDS: dict[str, Any] = {
    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
    "webhook": "validate",
    "kind": "Binding",
    "dryRun": False,
    "code": None,
    "latency_ms": 0.104,
    "reason": 'pod team-a/x denied by ollama-guard: "quoted", ünïcode, \n newline',
    "warnings": ["would deny: binding to gpu-1: needs 11.3 GiB, 0 MiB free"],
}


@pytest.fixture
def guard_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The `ollama_guard` logger as `configure_logging` leaves it, its stream captured."""
    logger = logging.getLogger("ollama_guard")
    saved = (logger.handlers[:], logger.level, logger.propagate, logging._srcfile)
    configure_logging("DEBUG")
    stream = io.StringIO()
    handler = logger.handlers[0]
    assert isinstance(handler, JsonLineHandler)
    handler.setStream(stream)
    try:
        yield logger, stream
    finally:
        logger.handlers[:], logger.level, logger.propagate, logging._srcfile = saved


def as_configured(logger: logging.Logger) -> None:
    """Only the guard's own handler, as in `ollama-guard serve`: pytest attaches its capture
    handlers to every non-propagating logger for each test's call phase, after the fixture ran,
    which would send every line through `logging` and leave the direct path untested."""
    logger.handlers[:] = [h for h in logger.handlers if type(h) is JsonLineHandler]


def _without_time(line: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(line)
    assert isinstance(entry.pop("ts"), float)
    return entry


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 25], ids=str)
def test_the_direct_line_is_the_line_logging_writes(
    guard_logger: tuple[logging.Logger, io.StringIO], level: int
) -> None:
    logger, stream = guard_logger
    as_configured(logger)
    log_fields(logger, level, "admission", FIELDS)
    logger.log(level, "admission", extra={"fields": FIELDS})
    direct, through_logging = stream.getvalue().splitlines()
    assert _without_time(direct) == _without_time(through_logging)
    assert _without_time(direct)["reason"] == FIELDS["reason"]


def test_as_configure_logging_leaves_it_a_line_is_written_without_a_log_record(
    guard_logger: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path is the one taken on the guard's own set-up: no `LogRecord` is made."""
    logger, stream = guard_logger
    as_configured(logger)

    def no_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        raise AssertionError("a LogRecord was built")

    monkeypatch.setattr(logger, "makeRecord", no_record)
    log_fields(logger, logging.INFO, "admission", FIELDS)
    assert _without_time(stream.getvalue())["uid"] == FIELDS["uid"]


def test_another_handler_gets_every_line_through_logging(guard_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = guard_logger
    as_configured(logger)
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    capture = Capture()
    logger.addHandler(capture)
    try:
        log_fields(logger, logging.INFO, "admission", FIELDS)
    finally:
        logger.removeHandler(capture)
    assert [r.getMessage() for r in seen] == ["admission"]
    assert seen[0].fields == FIELDS  # type: ignore[attr-defined]
    assert json.loads(stream.getvalue())["uid"] == FIELDS["uid"]  # the guard's own line is still written


def test_a_filter_still_applies(guard_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = guard_logger
    as_configured(logger)
    drop = logging.Filter("nothing-matches-this-name")
    logger.handlers[0].addFilter(drop)
    log_fields(logger, logging.INFO, "admission", FIELDS)
    assert stream.getvalue() == ""


def test_a_broken_stream_does_not_raise(guard_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = guard_logger
    as_configured(logger)
    stream.close()
    raise_exceptions = logging.raiseExceptions
    logging.raiseExceptions = False  # production setting: handleError stays quiet
    try:
        log_fields(logger, logging.INFO, "admission", FIELDS)  # handled by Handler.handleError
    finally:
        logging.raiseExceptions = raise_exceptions
    fresh = io.StringIO()
    handler = logger.handlers[0]
    assert isinstance(handler, JsonLineHandler)
    handler.setStream(fresh)
    log_fields(logger, logging.INFO, "admission", FIELDS)  # and the next line is written as usual
    assert json.loads(fresh.getvalue())["uid"] == FIELDS["uid"]


def test_the_formatter_reports_an_exception_in_one_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("ollama_guard", logging.ERROR, __file__, 1, "internal error", (), None)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["level"], entry["error"]) == ("internal error", "error", "RuntimeError: boom")


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.floats(min_value=0, max_value=60_000))
def test_millis_is_the_value_to_the_millisecond(seconds: float) -> None:
    """What the log lines' `ts` and `latency_ms` hold: within half a millisecond of the value, a
    whole number of milliseconds, and the same as `round(value, 3)` but for the last digit."""
    shown = millis(seconds)
    assert abs(shown - seconds) <= 0.0005 + 1e-9 * max(seconds, 1)
    assert abs(shown * 1000 - round(shown * 1000)) < 1e-6 * max(seconds, 1)
    assert abs(shown - round(seconds, 3)) <= 0.001 + 1e-12 * max(seconds, 1)
