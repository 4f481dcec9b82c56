"""History-informed polling: known forecasts, and the real `poll` on a fake clock."""

from __future__ import annotations

import random

from drills.clock import FakeClock
from drills.forecast_poll import Forecast, ForecastPollPolicy, calls_for, forecast
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
