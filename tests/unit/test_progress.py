"""The progress line of long waits: what it says (literal strings), when it speaks, and that it never hurts a wait."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import structlog

from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, RestoreFailed
from drills.forecast_poll import Forecast, ForecastPollPolicy
from drills.progress import ProgressSink, duration, expected_finish, fields, render
from drills.wait import PollEvent, PollPolicy, Verdict, deadline_in, poll

T0 = datetime(2026, 12, 1, 6, 0, 0, tzinfo=UTC)
PLAIN = PollPolicy()
FORECAST = ForecastPollPolicy(forecast=Forecast(7200, 60))


def ev(
    outcome: str = "pending", *, polls: int = 23, elapsed: float = 3725, nxt: float | None = 150, **kw: object
) -> PollEvent:
    value = kw.pop("value", {"DBInstanceStatus": "creating"})
    policy = kw.pop("policy", PLAIN)
    return PollEvent("restore of drill-orders-1", outcome, value, polls, elapsed, T0, nxt, policy)  # type: ignore[arg-type]


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (0, 42.4, 60, 185, 3599, 3600, 7620, 26 * 3600)] == [
        "0s", "42s", "1m00s", "3m05s", "59m59s", "1h00m", "2h07m", "26h00m",
    ]  # fmt: skip


def test_a_pending_wait_without_history_says_state_elapsed_polls_and_next_poll() -> None:
    assert render(ev()) == "restore of drill-orders-1: creating, 1h02m elapsed, 23 polls, next poll in 2m30s"
    assert render(ev(value={}, polls=1, elapsed=0, nxt=10)) == (
        "restore of drill-orders-1: waiting, 0s elapsed, 1 poll, next poll in 10s"
    )
    assert render(ev(value={"Status": "backing-up"})).startswith("restore of drill-orders-1: backing-up, ")


def test_a_forecast_wait_says_when_it_is_expected_and_how_late_it_is() -> None:
    assert render(ev(policy=FORECAST)) == (
        "restore of drill-orders-1: creating, 1h02m elapsed, 23 polls, next poll in 2m30s, expected ~08:00:00 UTC"
    )
    late = ev(policy=FORECAST, elapsed=7200 + 185, nxt=18)
    assert render(late).endswith("next poll in 18s, expected ~08:00:00 UTC (3m05s late)")
    # a wait that started 10 minutes after the request expects the end 10 minutes sooner after its own start
    shifted = ForecastPollPolicy(forecast=Forecast(7200, 60), offset_s=600)
    assert expected_finish(ev(policy=shifted)) == datetime(2026, 12, 1, 7, 50, tzinfo=UTC)
    assert expected_finish(ev(policy=ForecastPollPolicy())) is None  # no forecast, no promise


def test_the_last_line_of_a_wait_says_how_it_ended() -> None:
    ready = ev("ready", value={"DBInstanceStatus": "available"}, polls=64, elapsed=7212, nxt=None)
    assert render(ready) == "restore of drill-orders-1: available after 2h00m, 64 polls"
    assert render(ev("failed", value=None, polls=5, elapsed=190, nxt=None)) == (
        "restore of drill-orders-1: failed after 3m10s, 5 polls"
    )
    assert render(ev("timed-out", polls=90, elapsed=14400, nxt=None)) == (
        "restore of drill-orders-1: creating after 4h00m, 90 polls: out of time"
    )


def test_log_fields_carry_the_same_facts() -> None:
    assert fields(ev(policy=FORECAST)) == {
        "what": "restore of drill-orders-1",
        "outcome": "pending",
        "status": "creating",
        "elapsed_s": 3725,
        "polls": 23,
        "next_poll_in_s": 150,
        "expected_finish": "2026-12-01T08:00:00Z",
    }
    assert fields(ev("ready", value=None, nxt=None)) == {
        "what": "restore of drill-orders-1", "outcome": "ready", "status": None, "elapsed_s": 3725, "polls": 23,
    }  # fmt: skip


def test_not_a_terminal_one_plain_line_per_five_minutes_and_the_end() -> None:
    stream = io.StringIO()
    sink = ProgressSink(stream, tty=False)
    with structlog.testing.capture_logs() as logs:
        for n, elapsed in enumerate((0, 10, 20, 150, 299, 300, 310, 450, 601, 700), start=1):
            sink(ev(polls=n, elapsed=elapsed))
        sink(ev("ready", polls=11, elapsed=720, nxt=None))
    assert [(e["event"], e["elapsed_s"], e["outcome"]) for e in logs] == [
        ("waiting", 0, "pending"),
        ("waiting", 300, "pending"),
        ("waiting", 601, "pending"),
        ("waiting", 720, "ready"),
    ]
    assert stream.getvalue() == ""  # nothing drawn


def test_a_wait_ready_at_its_first_poll_leaves_no_trace() -> None:
    out = io.StringIO()
    with structlog.testing.capture_logs() as logs:
        ProgressSink(io.StringIO(), tty=False)(ev("ready", polls=1, elapsed=0, nxt=None))
        ProgressSink(out, tty=True)(ev("ready", polls=1, elapsed=0, nxt=None))
    assert logs == [] and out.getvalue() == ""


def test_on_a_terminal_one_line_rewritten_then_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    sink = ProgressSink(out, tty=True)
    sink(ev(polls=1, elapsed=0, nxt=10, value={}))
    sink(ev(polls=2, elapsed=10, nxt=10))
    sink(ev("ready", value={"DBInstanceStatus": "available"}, polls=3, elapsed=20, nxt=None))
    assert out.getvalue() == (
        "\r\x1b[K  restore of drill-orders-1: waiting, 0s elapsed, 1 poll, next poll in 10s"
        "\r\x1b[K  restore of drill-orders-1: creating, 10s elapsed, 2 polls, next poll in 10s"
        "\r\x1b[K  restore of drill-orders-1: available after 20s, 3 polls\n"
    )


def test_a_narrow_terminal_gets_a_cut_line_that_does_not_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    ProgressSink(out, tty=True)(ev())
    assert out.getvalue() == "\r\x1b[K  restore of drill-orders-1: creating,…"
    assert len(out.getvalue().removeprefix("\r\x1b[K")) == 39  # one column short of the edge: no wrap


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_drawn_on_unless_its_logs_are_json() -> None:
    assert ProgressSink(_Terminal()).tty is True
    assert ProgressSink(io.StringIO()).tty is False
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    try:
        assert ProgressSink(_Terminal()).tty is False  # a program reads JSON logs: plain events only
    finally:
        structlog.configure(**saved)


class _Closed(io.StringIO):
    def write(self, _s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stderr_stops_the_drawing_not_the_drill() -> None:
    sink = ProgressSink(_Closed(), tty=True)
    sink(ev(polls=1, elapsed=0))  # no exception
    assert sink.tty is False


# ----------------------------------------------------------------------------- the hook in wait.poll


def _ready_after(
    clock: FakeClock, seconds: float
) -> tuple[Callable[[], tuple[Verdict, dict[str, str]]], list[PollEvent]]:
    start = clock.monotonic_ns()

    def check() -> tuple[Verdict, dict[str, str]]:
        done = clock.monotonic_ns() - start >= seconds * 1e9
        return ("ready" if done else "pending"), {"DBInstanceStatus": "available" if done else "creating"}

    return check, []


def test_poll_tells_every_poll_then_the_end() -> None:
    clock = FakeClock(T0)
    check, heard = _ready_after(clock, 35)
    res = poll(
        clock, deadline_in(clock, 3600), check, "restore of x", on_poll=heard.append, policy=PollPolicy(jitter=0)
    )
    assert [(e.outcome, e.polls, e.elapsed_s, e.next_in_s) for e in heard] == [
        ("pending", 1, 0.0, 10.0),
        ("pending", 2, 10.0, 10.0),
        ("pending", 3, 20.0, 10.0),
        ("pending", 4, 30.0, 10.0),
        ("ready", 5, 40.0, None),
    ]
    assert res.polls == 5 and heard[-1].value == {"DBInstanceStatus": "available"}
    assert all(e.started_at == T0 and e.what == "restore of x" for e in heard)


def test_poll_tells_a_terminal_state_and_a_deadline() -> None:
    clock = FakeClock(T0)
    heard: list[PollEvent] = []

    def broken() -> tuple[Verdict, None]:
        raise RestoreFailed("DB instance x is incompatible-restore")

    with pytest.raises(RestoreFailed):
        poll(clock, deadline_in(clock, 60), broken, "restore of x", on_poll=heard.append)
    assert [(e.outcome, e.polls) for e in heard] == [("failed", 1)]
    heard.clear()
    with pytest.raises(DeadlineExceeded):
        poll(clock, deadline_in(clock, 25), lambda: ("pending", None), "x", on_poll=heard.append,
             policy=PollPolicy(jitter=0))  # fmt: skip
    assert [(e.outcome, e.next_in_s) for e in heard] == [
        ("pending", 10.0), ("pending", 10.0), ("pending", 5.0), ("timed-out", None),
    ]  # fmt: skip  # the last sleep is cut to the deadline, and the display says so


def test_a_failing_display_never_changes_how_a_wait_ends() -> None:
    clock = FakeClock(T0)
    check, _ = _ready_after(clock, 35)

    def boom(_e: PollEvent) -> None:
        raise OSError("stderr closed")

    res = poll(
        clock, deadline_in(clock, 3600), check, "x", on_poll=boom, policy=PollPolicy(jitter=0), rng=random.Random(0)
    )
    assert res.polls == 5
