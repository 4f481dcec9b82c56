"""The one wait primitive: :func:`poll` a check on the injected clock until it is ready or time runs out.

Every wait in the code goes through it (an AWS restore that takes hours, a local server that
starts in milliseconds, a process that must be gone), so every wait sleeps on ``Clock.sleep``
(tests of multi-hour waits take milliseconds with a :class:`~drills.clock.FakeClock`), stops at
a monotonic deadline and says how many polls it took. The policy sets the pace: the default
suits AWS (the interval grows with the time already waited, 10 s to 150 s); :data:`LOCAL` and
:data:`TIGHT` suit processes on this machine.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from tenacity import RetryCallState, Retrying

from drills.clock import Clock
from drills.errors import DeadlineExceeded

__all__ = [
    "LOCAL",
    "OnPoll",
    "PollEvent",
    "PollPolicy",
    "PollResult",
    "Verdict",
    "deadline_in",
    "every",
    "poll",
    "until",
]

S = TypeVar("S")


Verdict = Literal["ready", "pending"]


@dataclass(frozen=True)
class PollPolicy:
    """Interval = ``ratio`` x time already waited, clamped to [minimum, maximum], +/- jitter.

    Defaults: 10 s, growing by 20 % of the wait, at most 150 s: a 2-hour
    restore costs about 65 describe calls and its "available" time is known
    to within half an interval (at most ~83 s with jitter, about 1 % of 2 hours).

    Restores take minutes to hours, so a fixed short interval wastes API calls
    (and hits throttling when many drills run) while a fixed long one blurs
    short waits. Growing with elapsed time bounds the relative error of the
    measured time and keeps a 2-hour wait under ~90 calls.
    """

    minimum: float = 10.0
    maximum: float = 150.0
    ratio: float = 0.2
    jitter: float = 0.1

    def interval(self, elapsed: float, rng: random.Random) -> float:
        base = min(self.maximum, max(self.minimum, self.ratio * elapsed))
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))


@dataclass
class PollResult(Generic[S]):
    value: S
    polls: int
    seen_at: datetime  # wall time of the poll that saw the ready state
    previous_at: datetime  # wall time of the poll before it (== seen_at when ready at once)

    @property
    def estimate(self) -> datetime:
        """Midpoint of the window in which the state became ready."""
        return self.previous_at + (self.seen_at - self.previous_at) / 2

    @property
    def precision_ms(self) -> int:
        return max(1, int((self.seen_at - self.previous_at).total_seconds() * 500))


@dataclass(frozen=True)
class PollEvent:
    """What a wait just saw, for a progress display (:mod:`drills.progress`): never used to decide anything.

    ``outcome`` is ``pending`` after each poll that will be followed by another (``next_in_s`` is the
    sleep before it), then exactly one of ``ready``, ``failed`` (the check raised: a terminal state)
    or ``timed-out`` (the deadline came first).
    """

    what: str
    outcome: Literal["pending", "ready", "failed", "timed-out"]
    value: Any  # what the check returned (None when it raised)
    polls: int
    elapsed_s: float  # since this wait started
    started_at: datetime  # wall time of the wait's start
    next_in_s: float | None
    policy: PollPolicy


OnPoll = Callable[[PollEvent], None]

_RNG = random.Random()  # noqa: S311 - jitter for polling, not cryptography


def poll(
    clock: Clock,
    deadline_ns: int,
    check: Callable[[], tuple[Verdict, S]],
    what: str,
    *,
    policy: PollPolicy | None = None,
    rng: random.Random | None = None,
    on_deadline: Callable[[], Exception] | None = None,
    on_poll: OnPoll | None = None,
) -> PollResult[S]:
    """Call ``check`` until it says ready; raise DeadlineExceeded (or ``on_deadline()``) when time runs out.

    ``check`` is called at least once, then again after each sleep on ``clock`` while the
    monotonic ``deadline_ns`` is ahead; the last sleep is cut to the deadline. ``check``
    raises (RestoreFailed, TeardownError...) on terminal states, which ends the wait at
    once: tenacity only retries the "pending" result.

    ``on_poll`` hears of every poll (:class:`PollEvent`); it is for display only, so an error
    it raises is swallowed: a progress line must never change how a wait ends.
    """
    policy = policy or PollPolicy()
    rng = rng or _RNG
    started = clock.monotonic_ns()
    state: dict[str, Any] = {"polls": 0, "prev": clock.now(), "last": clock.now(), "value": None}
    started_at = state["last"]

    def tell(outcome: Literal["pending", "ready", "failed", "timed-out"], next_in: float | None = None) -> None:
        if on_poll is None:
            return
        elapsed = (clock.monotonic_ns() - started) / 1e9
        event = PollEvent(what, outcome, state["value"], state["polls"], elapsed, started_at, next_in, policy)
        with contextlib.suppress(Exception):  # display only (see above)
            on_poll(event)

    def attempt() -> tuple[Verdict, S]:
        state["prev"] = state["last"]
        try:
            result = check()
        except BaseException:
            state["polls"] += 1
            state["value"] = None
            tell("failed")
            raise
        state["last"] = clock.now()
        state["polls"] += 1
        state["value"] = result[1]
        return result

    def wait(rs: RetryCallState) -> float:
        elapsed = (clock.monotonic_ns() - started) / 1e9
        return policy.interval(elapsed, rng)

    def stop(rs: RetryCallState) -> bool:
        remaining = (deadline_ns - clock.monotonic_ns()) / 1e9
        return remaining <= 0

    def sleep(seconds: float) -> None:
        remaining = (deadline_ns - clock.monotonic_ns()) / 1e9
        pause = max(0.0, min(seconds, remaining))
        tell("pending", pause)
        clock.sleep(pause)

    retrying = Retrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=lambda rs: bool(rs.outcome and not rs.outcome.failed and rs.outcome.result()[0] == "pending"),
        reraise=True,
        retry_error_callback=lambda rs: None,
    )
    result = retrying(attempt)
    if result is None or result[0] != "ready":
        tell("timed-out")
        if on_deadline is not None:
            raise on_deadline()
        waited = (clock.monotonic_ns() - started) / 1e9
        raise DeadlineExceeded(
            f"{what}: not ready after {waited:.0f}s ({state['polls']} polls)",
            hint="raise the state's timeout_seconds or the drill deadline in the runbook",
        )
    tell("ready")
    first = state["polls"] == 1
    return PollResult(
        value=result[1],
        polls=state["polls"],
        seen_at=state["last"],
        previous_at=state["last"] if first else state["prev"],
    )


# ----------------------------------------------------------------------------- owning


LOCAL = PollPolicy(minimum=0.01, maximum=0.05, ratio=0.5, jitter=0.0)
"""A server on this machine: it refuses at once while starting, so polling often is cheap."""


def every(seconds: float) -> PollPolicy:
    """A fixed interval: for a process we watch closely (its pid file, its exit)."""
    return PollPolicy(minimum=seconds, maximum=seconds, ratio=0.0, jitter=0.0)


class _TimeUp(Exception):
    pass


def until(clock: Clock, seconds: float, ready: Callable[[], bool], what: str, *, policy: PollPolicy) -> bool:
    """:func:`poll` for a plain condition: True once ``ready()``, False when ``seconds`` ran out.

    For waits whose caller decides what running out of time means (a process that would not
    stop is reported, not raised). Processes do not care about fake clocks: waits on them
    pass a :class:`~drills.clock.SystemClock`.
    """

    def check() -> tuple[Verdict, None]:
        return ("ready" if ready() else "pending"), None

    try:
        poll(clock, deadline_in(clock, seconds), check, what, policy=policy, on_deadline=_TimeUp)
    except _TimeUp:
        return False
    return True


def deadline_in(clock: Clock, seconds: float) -> int:
    """The monotonic deadline ``seconds`` from now, for :func:`poll`."""
    return clock.monotonic_ns() + int(seconds * 1e9)
