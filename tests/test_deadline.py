"""The decision deadline: inline under SIGALRM on the main thread, a worker thread elsewhere."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from webhook.admission import review as rv
from webhook.admission.review import AdmissionResponse
from webhook.http.endpoint import Deadline, DeadlineExceeded, parse_timeout


def spin() -> AdmissionResponse:
    while True:  # a decision that never ends (a bug of ours)
        pass


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        pytest.param("5s", 5.0, id="seconds"),
        pytest.param("1500ms", 1.5, id="milliseconds"),
        pytest.param("1m", 30.0, id="capped"),
        pytest.param("0.5s", 0.5, id="fraction"),
        pytest.param("soon", 10.0, id="unknown-form"),
        pytest.param(None, 10.0, id="absent"),
    ],
)
def test_parse_timeout(raw: str | None, seconds: float) -> None:
    assert parse_timeout(raw) == seconds


def test_inline_on_the_main_thread_interrupts_a_runaway_decision() -> None:
    assert threading.current_thread() is threading.main_thread()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(Deadline.run(spin, 0.2))
    assert time.monotonic() - started < 1.0
    # the timer is disarmed afterwards: a later, slower-than-the-old-budget call is not interrupted
    assert asyncio.run(Deadline.run(lambda: (time.sleep(0.3), rv.allowed())[1], 2.0)).allowed


def test_off_the_main_thread_a_worker_thread_bounds_the_decision() -> None:
    outcome: list[object] = []

    def run() -> None:
        started = time.monotonic()
        try:
            asyncio.run(Deadline.run(lambda: (time.sleep(2), rv.allowed())[1], 0.2))
        except DeadlineExceeded:
            outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert outcome and isinstance(outcome[0], float) and outcome[0] < 1.0


def slow(seconds: float) -> AdmissionResponse:
    time.sleep(seconds)
    return rv.allowed()


def test_a_timer_left_pending_by_a_quick_decision_never_fires_into_other_code() -> None:
    assert Deadline.inline_ok()
    assert Deadline.run_inline(rv.allowed, 0.05).allowed  # arms a timer for 50 ms, returns at once
    time.sleep(0.15)  # the timer fires here, between decisions: it must stay quiet
    assert Deadline.run_inline(rv.allowed, 0.05).allowed


def test_a_later_decision_outlasting_an_earlier_pending_timer_runs_to_its_own_budget() -> None:
    assert Deadline.inline_ok()
    Deadline.run_inline(rv.allowed, 0.1)  # pending timer: +100 ms
    started = time.monotonic()
    assert Deadline.run_inline(lambda: slow(0.3), 2.0).allowed  # the timer fires mid-way and re-arms
    assert time.monotonic() - started >= 0.3


def test_a_short_budget_after_a_long_one_is_still_enforced() -> None:
    assert Deadline.inline_ok()
    Deadline.run_inline(rv.allowed, 20.0)  # pending timer: +20 s
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        Deadline.run_inline(spin, 0.2)  # its deadline is earlier than the pending timer: re-armed
    assert time.monotonic() - started < 1.0
