"""The one wait primitive, on a fake clock: hours of waiting take no real time, and the deadline is the deadline."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, RestoreFailed
from drills.wait import LOCAL, PollPolicy, Verdict, deadline_in, every, poll, until


def _clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_two_hour_wait_costs_tens_of_polls_and_no_real_time() -> None:
    clock = _clock()
    ready_at = clock.monotonic_ns() + int(7200e9)

    def check() -> tuple[Verdict, str]:
        return ("ready" if clock.monotonic_ns() >= ready_at else "pending"), "available"

    started = time.monotonic()
    result = poll(clock, deadline_in(clock, 3 * 3600), check, "db", policy=PollPolicy(jitter=0.0))
    assert time.monotonic() - started < 2.0
    assert result.value == "available"
    assert 40 <= result.polls <= 90  # the interval grows with the wait: not 720 polls of 10 s
    assert result.previous_at < result.seen_at
    # the state became ready between the last two polls, and the estimate lies in that window
    assert result.previous_at <= result.estimate <= result.seen_at


def test_running_out_of_time_raises_at_the_deadline_not_after() -> None:
    clock = _clock()
    start = clock.monotonic_ns()
    with pytest.raises(DeadlineExceeded, match=r"never: not ready after 60s"):
        poll(clock, deadline_in(clock, 60), lambda: ("pending", None), "never", policy=every(7.0))
    assert clock.monotonic_ns() - start == int(60e9)  # the last sleep was cut to the deadline


def test_the_caller_names_the_deadline_error() -> None:
    clock = _clock()
    with pytest.raises(RestoreFailed, match="log says why"):
        poll(
            clock,
            deadline_in(clock, 1),
            lambda: ("pending", None),
            "server",
            policy=LOCAL,
            on_deadline=lambda: RestoreFailed("log says why"),
        )


def test_a_terminal_state_ends_the_wait_at_once() -> None:
    clock = _clock()
    calls: list[int] = []

    def check() -> tuple[Verdict, None]:
        calls.append(1)
        if len(calls) == 3:
            raise RestoreFailed("the server exited")
        return "pending", None

    with pytest.raises(RestoreFailed, match="exited"):
        poll(clock, deadline_in(clock, 3600), check, "server", policy=LOCAL)
    assert len(calls) == 3


def test_until_says_whether_the_condition_came_true_in_time() -> None:
    clock = _clock()
    end = clock.monotonic_ns() + int(0.5e9)
    assert until(clock, 1.0, lambda: clock.monotonic_ns() >= end, "soon", policy=every(0.05))
    assert not until(clock, 1.0, lambda: False, "never", policy=every(0.05))


def test_until_passes_other_errors_through() -> None:
    """Only running out of time is a False; a DeadlineExceeded raised by the check itself is not swallowed."""
    clock = _clock()

    def check() -> bool:
        raise DeadlineExceeded("the check's own")

    with pytest.raises(DeadlineExceeded, match="the check's own"):
        until(clock, 1.0, check, "x", policy=every(0.05))


def test_local_policy_polls_often_at_first_and_at_most_every_50ms() -> None:
    import random

    rng = random.Random(0)
    assert LOCAL.interval(0.0, rng) == pytest.approx(0.01)
    assert LOCAL.interval(3600.0, rng) == pytest.approx(0.05)
