"""Interrupting a drill that runs on a worker thread (``drill fleet``).

Python delivers signals to the main thread only. A lone ``drill run`` turns SIGINT/SIGTERM into
:class:`~drills.errors.Interrupted` there (:mod:`drills.machine`); a fleet runs its drills on worker
threads, so its main thread catches the signal and sets a :class:`CancelToken` that every drill
thread watches. A drill thread notices it where a drill spends its time waiting, in the clock's
sleep (:class:`CancellableClock`: a 150 s RDS poll wakes at once), and between states.

The token only raises while the machine runs the drill's states (:func:`armed`). During teardown
and evidence it is ignored, exactly as a signal is deferred there: cleanup must finish.

Both the token and the armed flag are context variables: each thread has its own context, so a
drill thread sees only its own (and a lone ``drill run`` none at all).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from drills.clock import Clock, SystemClock
from drills.errors import Interrupted

__all__ = ["CancelToken", "CancellableClock", "armed", "check", "watching"]


class CancelToken:
    """Set once (by the fleet's signal handler); read by every drill thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Block up to ``seconds`` of real time; True as soon as the token is set."""
        return self._event.wait(max(0.0, seconds))


_TOKEN: ContextVar[CancelToken | None] = ContextVar("drills_cancel_token", default=None)
_ARMED: ContextVar[bool] = ContextVar("drills_cancel_armed", default=False)


@contextmanager
def watching(token: CancelToken) -> Iterator[None]:
    """This thread's drill obeys ``token`` (the fleet wraps each drill in it)."""
    reset = _TOKEN.set(token)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


@contextmanager
def armed(flag: bool) -> Iterator[None]:
    """``True`` while the states run (a set token raises), ``False`` while tearing down (ignored)."""
    reset = _ARMED.set(flag)
    try:
        yield
    finally:
        _ARMED.reset(reset)


def _live() -> CancelToken | None:
    token = _TOKEN.get()
    return token if token is not None and _ARMED.get() else None


def check() -> None:
    """Raise :class:`Interrupted` if this thread's token is set and its drill's states are running."""
    token = _live()
    if token is not None and token.is_set():
        raise Interrupted(token.reason or "interrupted")


class CancellableClock:
    """A clock whose sleep ends with :class:`Interrupted` when the thread's token is set (while armed).

    Over a :class:`SystemClock` the sleep waits on the token itself, so it wakes at once; over any
    other clock (a fake or scaled one in tests) it sleeps on that clock and checks before and after.
    """

    def __init__(self, inner: Clock) -> None:
        self.inner = inner

    def now(self) -> datetime:
        return self.inner.now()

    def monotonic_ns(self) -> int:
        return self.inner.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        token = _live()
        if token is None:
            self.inner.sleep(seconds)
            return
        check()
        if isinstance(self.inner, SystemClock):
            token.wait(seconds)
        else:
            self.inner.sleep(seconds)
        check()
