"""Timing precision of the "available" mark: the plain growing poll against the history-informed one.

Run: .venv/bin/python benchmarks/bench_forecast_poll.py

For each scenario (restores that take ~10 min, ~2 h, ~6 h, with a spread), 300
drills: each has a history of 7 past durations and a true duration drawn from
the same distribution. The real :func:`poll` runs on a FakeClock against a
check that turns ready at the true duration, once with the plain
:class:`PollPolicy` and once with :class:`ForecastPollPolicy` fed the history.
Reported: describe calls per drill, the error of the measured mark (the
midpoint of the last interval) against the truth, and the precision claimed.
A last row shows a forecast that is wrong (the restore takes 1.5x longer than
its history): the policy falls back to the plain growth after its window.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from drills.clock import FakeClock  # noqa: E402
from drills.forecast_poll import ForecastPollPolicy, forecast  # noqa: E402
from drills.wait import PollPolicy, poll  # noqa: E402

SCENARIOS = [("~10 min", 600, 60), ("~2 h", 7200, 300), ("~6 h", 21600, 900), ("~2 h, steady", 7200, 60)]


def measure(policy: PollPolicy, true_s: float, rng: random.Random) -> tuple[int, float, float]:
    clock = FakeClock()
    t0 = clock.monotonic_ns()

    def check() -> tuple[str, None]:
        return ("ready" if (clock.monotonic_ns() - t0) / 1e9 >= true_s else "pending", None)

    res = poll(clock, t0 + int(10 * 86400 * 1e9), check, "bench", policy=policy, rng=rng)  # type: ignore[arg-type]
    truth = clock.start.timestamp() + true_s
    error = abs(res.estimate.timestamp() - truth)
    return res.polls, error, res.precision_ms / 1000


def row(name: str, mean: float, sd: float, rng: random.Random, *, late: float = 1.0, n: int = 300) -> None:
    plain: list[tuple[int, float, float]] = []
    fore: list[tuple[int, float, float]] = []
    for _ in range(n):
        history = [max(60.0, rng.gauss(mean, sd)) for _ in range(7)]
        true_s = max(60.0, rng.gauss(mean, sd)) * late
        plain.append(measure(PollPolicy(), true_s, rng))
        fore.append(measure(ForecastPollPolicy(forecast=forecast(history)), true_s, rng))
    for label, xs in (("plain", plain), ("forecast", fore)):
        calls = statistics.mean(x[0] for x in xs)
        errs = sorted(x[1] for x in xs)
        p95 = errs[int(0.95 * len(errs)) - 1]
        claimed = max(x[2] for x in xs)
        print(
            f"{name:<22} {label:<9} calls/drill {calls:6.1f}   error p50 {statistics.median(errs):6.1f}s"
            f"  p95 {p95:6.1f}s  max {errs[-1]:6.1f}s   claimed precision max +/-{claimed:5.1f}s"
        )


def main() -> None:
    rng = random.Random(20261201)
    for name, mean, sd in SCENARIOS:
        row(name, mean, sd, rng)
    row("~2 h, forecast wrong", 7200, 300, rng, late=1.5)


if __name__ == "__main__":
    main()
