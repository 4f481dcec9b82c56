"""RTO and RPO from the timeline: pure functions, no I/O.

Achieved RTO runs from the restore request (the start of the first
``restore`` attempt) to the end of the last ``validate`` attempt, measured on
the monotonic clock; each phase is the monotonic time spent in its state,
retries and their backoff included. Durations are integer milliseconds and
never negative, whatever the wall clock did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["RPO_METHODS", "Measurement", "TimelineEntry", "duration_ms", "measure", "rpo_ms"]

RTO_STATES = ("restore", "await_ready", "connect", "validate")


def duration_ms(start_ns: int, end_ns: int) -> int:
    """Milliseconds between two monotonic readings, floored at zero."""
    return max(0, (end_ns - start_ns) // 1_000_000)


@dataclass(frozen=True)
class TimelineEntry:
    """One state attempt, like pytest's CallInfo: when, how long, how it ended."""

    state: str
    attempt: int
    started_at: str  # ISO-8601 UTC
    ended_at: str
    start_ns: int  # monotonic
    end_ns: int
    outcome: str  # ok | error | retry | skipped
    error: str | None = None

    @property
    def duration_ms(self) -> int:
        return duration_ms(self.start_ns, self.end_ns)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "state": self.state,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "time_source": "runner-clock",
            "precision_ms": 1,
        }
        if self.error:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class Measurement:
    achieved_rto_ms: int | None  # None when the drill never got validated
    rto_phases_ms: dict[str, int]
    rto_objective_ms: int
    rto_met: bool
    achieved_rpo_ms: int | None
    rpo_objective_ms: int | None
    rpo_met: bool | None
    rpo_method: str


RPO_METHODS = {
    "target": "recovery target time minus the newest commit found in the restored data",
    "request": "restore request time minus the newest commit found (target: latest)",
    "dump": "dump creation time is the recovery point; reference is the restore request",
    "none": "no freshness probe configured: RPO not measured",
}


def rpo_ms(reference: datetime | None, newest_commit: datetime | None) -> int | None:
    """Reference minus newest commit, in ms; None if either is unknown.

    A negative value (a commit newer than the reference) is kept: it means
    the restore went past its target, which the caller reports as a failure.
    """
    if reference is None or newest_commit is None:
        return None
    return int((reference - newest_commit).total_seconds() * 1000)


def measure(
    timeline: list[TimelineEntry],
    *,
    validated: bool,
    rto_objective_s: int,
    rpo_objective_s: int | None,
    achieved_rpo: int | None,
    rpo_method: str,
) -> Measurement:
    phases: dict[str, int] = {}
    for e in timeline:
        if e.state in RTO_STATES:
            phases[e.state] = phases.get(e.state, 0) + e.duration_ms
    rto: int | None = None
    starts = [e.start_ns for e in timeline if e.state == "restore"]
    ends = [e.end_ns for e in timeline if e.state == "validate" and e.outcome == "ok"]
    if validated and starts and ends:
        rto = duration_ms(min(starts), max(ends))
    rto_obj = rto_objective_s * 1000
    rpo_obj = rpo_objective_s * 1000 if rpo_objective_s is not None else None
    rpo_met: bool | None = None
    if rpo_obj is not None:
        rpo_met = achieved_rpo is not None and 0 <= achieved_rpo <= rpo_obj
    return Measurement(
        achieved_rto_ms=rto,
        rto_phases_ms=phases,
        rto_objective_ms=rto_obj,
        rto_met=rto is not None and rto <= rto_obj,
        achieved_rpo_ms=achieved_rpo,
        rpo_objective_ms=rpo_obj,
        rpo_met=rpo_met,
        rpo_method=rpo_method,
    )
