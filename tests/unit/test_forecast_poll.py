"""History-informed polling: known forecasts, and the real `poll` on a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from drills.backends.base import Mark
from drills.clock import FakeClock
from drills.forecast_poll import (
    Forecast,
    ForecastPollPolicy,
    aligned,
    calls_for,
    describe,
    forecast,
    wait_durations,
)
from drills.wait import PollPolicy, poll


def test_forecast_is_the_median_and_scaled_mad_of_the_history() -> None:
    assert forecast([7000, 7100, 7200, 7300, 7400]) == Forecast(7200, 1.4826 * 100)
    assert forecast([7200, 7200, 7200]) == Forecast(7200, 15.0)  # a spread floor: luck is not steadiness
    assert forecast([7200, 7300]) is None  # too little history
    assert forecast([0, -5, 7200, 7300]) is None  # non-positive durations are not history


def test_the_plain_policy_needs_64_calls_for_two_hours() -> None:
    # 10 s intervals until 50 s waited, then 20 % of the time waited, at most 150 s
    assert calls_for(PollPolicy(), 7200) == 64


def run(policy: PollPolicy, true_s: float) -> tuple[int, float]:
    clock = FakeClock()

    def check() -> tuple[str, None]:
        return ("ready" if clock.monotonic_ns() / 1e9 >= true_s else "pending", None)

    res = poll(clock, int(86400e9), check, "t", policy=policy, rng=random.Random(1))  # type: ignore[arg-type]
    return res.polls, abs(res.estimate.timestamp() - (clock.start.timestamp() + true_s))


def test_a_steady_two_hour_restore_is_timed_within_10s_with_fewer_calls() -> None:
    policy = ForecastPollPolicy(forecast=Forecast(7200, 60))
    for true_s in (7080, 7150, 7200, 7290, 7340):
        calls, error = run(policy, true_s)
        assert calls <= 64, (true_s, calls)
        assert error <= 10, (true_s, error)
        plain_calls, plain_error = run(PollPolicy(), true_s)
        assert plain_error > 10 or plain_calls > calls  # the plain poll is coarser here


def test_after_the_window_it_falls_back_to_the_plain_growth() -> None:
    policy = ForecastPollPolicy(forecast=Forecast(7200, 60), jitter=0.0)
    lo, hi, dense = policy.window()
    assert lo < 7200 < hi and dense == 18.0
    rng = random.Random(0)
    assert policy.interval(hi + 1, rng) == PollPolicy(jitter=0.0).interval(hi + 1, rng) == 150.0
    assert policy.interval(7200, rng) == 18.0
    assert policy.interval(lo - 30, rng) == 30.0  # the last early poll lands on the window's start


def test_without_a_forecast_it_is_the_plain_policy() -> None:
    rng = random.Random(0)
    assert ForecastPollPolicy(jitter=0.0).interval(3000, rng) == PollPolicy(jitter=0.0).interval(3000, rng)


# ----------------------------------------------------------------------------- history and alignment


def _rec(*marks: tuple[str, str]) -> dict[str, Any]:
    return {"marks": [{"name": n, "at": at, "source": "runner-clock", "precision_ms": 1} for n, at in marks]}


def test_wait_durations_are_request_to_available_from_records_that_have_both() -> None:
    records: list[dict[str, Any]] = [
        _rec(("restore-requested", "2026-11-01T10:00:00Z"), ("instance-available", "2026-11-01T12:00:30Z")),
        _rec(("restore-requested", "2026-11-02T10:00:00Z")),  # failed before it was available
        _rec(("restore-requested", "2026-11-03T10:00:00.5Z"), ("instance-available", "2026-11-03T11:59:00Z")),
        _rec(("restore-requested", "2026-11-04T10:00:00Z"), ("cluster-available", "2026-11-04T11:00:00Z")),
        _rec(("restore-requested", "2026-11-05T10:00:00Z"), ("instance-available", "2026-11-05T09:00:00Z")),
        _rec(  # a mark twice: not guessed at
            ("restore-requested", "2026-11-06T10:00:00Z"),
            ("instance-available", "2026-11-06T11:00:00Z"),
            ("instance-available", "2026-11-06T12:00:00Z"),
        ),
        {"marks": "garbage"},
        _rec(("restore-requested", "yesterday"), ("instance-available", "2026-11-07T12:00:00Z")),
    ]
    assert wait_durations(records, "instance-available") == [7230.0, 7139.5]
    assert wait_durations(records, "cluster-available") == [3600.0]
    many = [
        _rec(("restore-requested", "2026-11-01T10:00:00Z"), ("instance-available", f"2026-11-01T10:{m:02d}:00Z"))
        for m in range(1, 16)
    ]
    assert wait_durations(many, "instance-available") == [60.0 * m for m in range(6, 16)]  # the newest ten


def test_a_wait_that_starts_late_keeps_the_window_where_the_history_put_it() -> None:
    base = ForecastPollPolicy(forecast=Forecast(7200, 60), jitter=0.0)
    marks = [Mark("restore-requested", "2026-12-01T06:00:00Z", "runner-clock", 1)]
    later = aligned(base, marks, datetime(2026, 12, 1, 6, 30, tzinfo=UTC))  # await_ready retried 30 min on
    assert isinstance(later, ForecastPollPolicy) and later.offset_s == 1800
    rng = random.Random(0)
    lo, hi, dense = base.window()
    assert later.interval(hi - 1800 - 60, rng) == dense == 18.0  # dense 30 min sooner on its own clock
    assert later.window() == (lo, hi, dense)
    assert aligned(None, marks, datetime(2026, 12, 1, tzinfo=UTC)) == PollPolicy()  # no history: as before
    plain = PollPolicy(minimum=5)
    assert aligned(plain, marks, datetime(2026, 12, 1, tzinfo=UTC)) is plain
    assert aligned(base, [], datetime(2026, 12, 1, tzinfo=UTC)) is base  # no request mark: nothing to shift by


def test_the_evidence_entry_names_the_policy_and_its_window_in_integer_ms() -> None:
    assert describe(PollPolicy(), 2) == {"policy": "plain", "history_drills": 2, "forecast": None}
    doc = describe(ForecastPollPolicy(forecast=Forecast(7200, 60)), 7)
    assert doc["policy"] == "forecast" and doc["history_drills"] == 7
    f = doc["forecast"]
    assert (f["expected_ms"], f["spread_ms"], f["window_interval_ms"]) == (7_200_000, 60_000, 18_000)
    lo, hi = f["window_ms"]
    assert lo <= 7_200_000 - 2.5 * 60_000 and hi >= 7_200_000 + 2.5 * 60_000  # at least k spreads each side
