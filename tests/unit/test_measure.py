"""RTO/RPO arithmetic: property tests that no duration is ever negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from drills.clock import FakeClock
from drills.measure import RTO_STATES, TimelineEntry, duration_ms, measure, rpo_ms

ns = st.integers(min_value=0, max_value=10**15)


def test_durations_are_what_the_fake_clock_says() -> None:
    clock = FakeClock()
    start = clock.monotonic_ns()
    clock.sleep(2.5)
    assert duration_ms(start, clock.monotonic_ns()) == 2500
    clock.advance(7200)  # a two-hour restore
    assert duration_ms(start, clock.monotonic_ns()) == 7_202_500
    clock.advance(0.0009)  # under a millisecond: floored, not rounded up
    assert duration_ms(start, clock.monotonic_ns()) == 7_202_500


def test_readings_in_the_wrong_order_give_zero_not_a_negative_duration() -> None:
    clock = FakeClock()
    clock.advance(3)
    later = clock.monotonic_ns()
    assert duration_ms(later, 0) == 0  # swapped readings (3 s "backwards") floor at zero
    assert duration_ms(later, later) == 0
    assert TimelineEntry("restore", 1, "", "", later, 0, "ok").duration_ms == 0


states = st.sampled_from(["preflight", *RTO_STATES, "measure", "teardown"])
entries = st.lists(st.tuples(states, ns, ns, st.sampled_from(["ok", "error", "retry"])), max_size=12)


@given(entries, st.booleans(), st.integers(1, 10**6))
def test_rto_and_phases_are_never_negative_whatever_the_clock_did(
    raw: list[tuple[str, int, int, str]], validated: bool, objective: int
) -> None:
    timeline = [TimelineEntry(s, 1, "", "", a, b, o) for s, a, b, o in raw]
    m = measure(
        timeline,
        validated=validated,
        rto_objective_s=objective,
        rpo_objective_s=None,
        achieved_rpo=None,
        rpo_method="none",
    )
    assert all(v >= 0 for v in m.rto_phases_ms.values())
    assert m.achieved_rto_ms is None or m.achieved_rto_ms >= 0
    if not validated:
        assert m.achieved_rto_ms is None and m.rto_met is False


def entry(state: str, start_s: float, end_s: float, outcome: str = "ok") -> TimelineEntry:
    return TimelineEntry(state, 1, "", "", int(start_s * 1e9), int(end_s * 1e9), outcome)


def test_rto_runs_from_restore_request_to_validation_and_excludes_preflight_and_teardown() -> None:
    timeline = [
        entry("preflight", 0, 5),
        entry("restore", 5, 65),
        entry("await_ready", 65, 305),
        entry("connect", 305, 306),
        entry("validate", 306, 316),
        entry("measure", 316, 316),
        entry("teardown", 316, 400),
    ]
    m = measure(
        timeline, validated=True, rto_objective_s=300, rpo_objective_s=60, achieved_rpo=1500, rpo_method="target"
    )
    assert m.achieved_rto_ms == 311_000
    assert m.rto_phases_ms == {"restore": 60_000, "await_ready": 240_000, "connect": 1000, "validate": 10_000}
    assert m.rto_met is False  # 311 s > 300 s: a breach fails the drill
    assert m.rpo_met is True


def test_retries_count_towards_their_phase() -> None:
    timeline = [entry("restore", 0, 1, "retry"), entry("restore", 3, 4), entry("validate", 4, 5)]
    m = measure(
        timeline, validated=True, rto_objective_s=10, rpo_objective_s=None, achieved_rpo=None, rpo_method="none"
    )
    assert m.achieved_rto_ms == 5000
    assert m.rto_phases_ms["restore"] == 2000


def test_rpo_is_reference_minus_newest_commit_and_a_commit_after_the_target_is_not_met() -> None:
    t = datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert rpo_ms(t, t - timedelta(seconds=2.5)) == 2500
    assert rpo_ms(t, None) is None
    late = rpo_ms(t, t + timedelta(seconds=1))
    m = measure([], validated=False, rto_objective_s=1, rpo_objective_s=60, achieved_rpo=late, rpo_method="target")
    assert m.rpo_met is False
