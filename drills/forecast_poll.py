"""Polling that uses the runbook's history: dense around the predicted finish, sparse before it.

The plain :class:`PollPolicy` grows its interval with the time already
waited (10 s to 150 s), so a 2-hour restore's "available" mark is known only
to within half an interval, up to ~83 s. But the history knows roughly when
this runbook's restore finishes. :class:`ForecastPollPolicy` spends the same
number of calls differently: few while the restore cannot be done yet, many
in a window of ``k`` robust standard deviations around the forecast, so the
mark lands within about +/-10 s, and falls back to the plain policy when the
forecast was wrong (after the window).

The call budget is the plain policy's own count for the forecast duration,
so when the forecast holds the drill makes no more calls than before; the
window's interval is widened (never below ``dense_min``) to fit that budget
when the history is too spread out for a tight window.

What it costs: while the restore cannot be finished yet, polls come up to
``early_max`` apart, so a restore that fails early (``restore-error``) is
seen up to that much later. It is never a false pass: only the timing of
the wait changes, every poll still checks the real status.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from drills.wait import PollPolicy

__all__ = [
    "READY_MARKS",
    "REQUESTED_MARK",
    "Forecast",
    "ForecastPollPolicy",
    "aligned",
    "calls_for",
    "describe",
    "forecast",
    "wait_durations",
]

MIN_HISTORY = 3
MIN_SPREAD_S = 15.0  # below this a history is luckier than the service is steady
RECENT = 10  # the newest drills only: a restore's duration drifts as the database grows

REQUESTED_MARK = "restore-requested"
# The mark that ends the wait the forecast is about, per backend: the restored resource the backend
# polls right after the request (an Aurora writer is created only after its cluster is available).
READY_MARKS = {"rds": "instance-available", "aurora": "cluster-available"}


@dataclass(frozen=True)
class Forecast:
    expected_s: float  # median of the past durations
    spread_s: float  # 1.4826 x MAD, at least MIN_SPREAD_S


def forecast(durations: Sequence[float]) -> Forecast | None:
    """The robust centre and spread of past wait durations; None with fewer than three."""
    usable = [d for d in durations if d > 0]
    if len(usable) < MIN_HISTORY:
        return None
    mid = statistics.median(usable)
    mad = statistics.median(abs(d - mid) for d in usable)
    return Forecast(mid, max(MIN_SPREAD_S, 1.4826 * mad))


def _when(text: object) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else None


def wait_durations(records: Iterable[Mapping[str, Any]], ready_mark: str, *, recent: int = RECENT) -> list[float]:
    """Seconds from ``restore-requested`` to ``ready_mark`` in past records (drill predicates), oldest first.

    Only records with both marks, each once, and a positive gap count: a drill that failed before
    its restore was ready says nothing about how long a restore takes; a record with a mark twice
    (an odd writer) is left out rather than guessed at. The newest ``recent`` are kept.
    """
    out: list[float] = []
    for rec in records:
        marks = rec.get("marks") if isinstance(rec, Mapping) else None
        if not isinstance(marks, list):
            continue
        found: dict[str, list[datetime | None]] = {}
        for m in marks:
            if isinstance(m, Mapping) and m.get("name") in (REQUESTED_MARK, ready_mark):
                found.setdefault(str(m["name"]), []).append(_when(m.get("at")))
        start, end = found.get(REQUESTED_MARK, []), found.get(ready_mark, [])
        if len(start) == 1 and len(end) == 1 and start[0] is not None and end[0] is not None:
            gap = (end[0] - start[0]).total_seconds()
            if gap > 0:
                out.append(gap)
    return out[-recent:] if recent > 0 else out


def calls_for(policy: PollPolicy, duration_s: float) -> int:
    """How many polls ``policy`` makes (without jitter) to see a wait of ``duration_s`` end."""
    no_jitter = random.Random(0)  # noqa: S311 - jitter is removed below anyway
    plain = PollPolicy(policy.minimum, policy.maximum, policy.ratio, 0.0)
    if isinstance(policy, ForecastPollPolicy):
        plain = policy.without_jitter()
    elapsed, calls = 0.0, 1  # the first poll is at once
    while elapsed < duration_s:
        elapsed += plain.interval(elapsed, no_jitter)
        calls += 1
    return calls


@dataclass(frozen=True)
class ForecastPollPolicy(PollPolicy):
    """Sparse until the forecast window, dense inside it, the plain policy after it."""

    forecast: Forecast | None = None
    k: float = 2.5  # window half-width in robust standard deviations (~99 % of a normal spread)
    dense_min: float = 18.0  # +/-9 s, +/-10 s with 10 % jitter
    early_ratio: float = 0.3
    early_max: float = 300.0  # sparser than the plain 150 s: the calls saved pay for the dense window
    offset_s: float = 0.0  # how long the restore had been under way when this wait started (see aligned)

    def without_jitter(self) -> ForecastPollPolicy:
        return replace(self, jitter=0.0)

    def window(self) -> tuple[float, float, float]:
        """(start, end, interval) of the window around the forecast.

        At least ``k`` robust standard deviations each side, polled every ``dense_min``;
        when the plain policy's call budget pays for more, the window widens to spend it
        (a forecast from a few drills is itself uncertain); when it cannot pay even for
        ``k`` deviations, the interval widens instead.
        """
        assert self.forecast is not None
        f = self.forecast
        budget = calls_for(PollPolicy(self.minimum, self.maximum, self.ratio, 0.0), f.expected_s)

        def fits(half: float) -> tuple[bool, float]:
            lo = max(0.0, f.expected_s - half)
            room = max(1, budget - self._early_calls(lo))
            return room * self.dense_min >= 2 * half, (f.expected_s + half - lo) / room

        half = self.k * f.spread_s
        ok, needed = fits(half)
        if not ok:
            return max(0.0, f.expected_s - half), f.expected_s + half, max(self.dense_min, needed)
        while half < f.expected_s and fits(half * 1.25)[0]:
            half *= 1.25
        return max(0.0, f.expected_s - half), f.expected_s + half, self.dense_min

    def _early_calls(self, lo: float) -> int:
        calls, elapsed, no_jitter = 1, 0.0, random.Random(0)  # noqa: S311
        while elapsed < lo:
            elapsed += self._early(elapsed, lo, no_jitter, jitter=False)
            calls += 1
        return calls

    def _early(self, elapsed: float, lo: float, rng: random.Random, *, jitter: bool) -> float:
        step = min(self.early_max, max(self.minimum, self.early_ratio * elapsed))
        if jitter:
            step *= 1.0 + rng.uniform(-self.jitter, self.jitter)
        return max(1.0, min(step, lo - elapsed))  # land on the window's start, never past it

    def interval(self, elapsed: float, rng: random.Random) -> float:
        if self.forecast is None:
            return super().interval(elapsed, rng)
        elapsed += self.offset_s  # the forecast counts from the restore request, not from this wait
        lo, hi, dense = self.window()
        if elapsed < lo:
            return self._early(elapsed, lo, rng, jitter=True)
        if elapsed <= hi:
            return dense * (1.0 + rng.uniform(-self.jitter, self.jitter))
        return super().interval(elapsed, rng)


class _Mark(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def at(self) -> str: ...


def aligned(policy: PollPolicy | None, marks: Sequence[_Mark], now: datetime) -> PollPolicy:
    """The policy for the wait of a requested restore, its forecast counted from the ``restore-requested`` mark.

    A wait that starts later than the request (a retried ``await_ready``) would otherwise put the
    dense window late. None (no forecast configured) is the plain :class:`PollPolicy`, as before.
    """
    if not isinstance(policy, ForecastPollPolicy) or policy.forecast is None:
        return policy or PollPolicy()
    requested = [_when(m.at) for m in marks if m.name == REQUESTED_MARK]
    start = requested[-1] if requested else None
    if start is None:
        return policy
    return replace(policy, offset_s=max(0.0, (now - start).total_seconds()))


def describe(policy: PollPolicy, history: int) -> dict[str, Any]:
    """The evidence's ``restore_wait``: which policy paced the wait for the restore, and the forecast it used."""
    if not isinstance(policy, ForecastPollPolicy) or policy.forecast is None:
        return {"policy": "plain", "history_drills": history, "forecast": None}
    lo, hi, dense = policy.window()
    f = policy.forecast
    return {
        "policy": "forecast",
        "history_drills": history,
        "forecast": {  # integer milliseconds: evidence keeps no floats
            "expected_ms": round(f.expected_s * 1000),
            "spread_ms": round(f.spread_s * 1000),
            "window_ms": [round(lo * 1000), round(hi * 1000)],
            "window_interval_ms": round(dense * 1000),
        },
    }
