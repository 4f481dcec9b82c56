"""A progress display for long waits: an AWS restore takes hours, and a silent terminal looks hung.

On a terminal, one line rewritten at each poll: what is awaited, its state, the time waited,
the polls so far, when the next one comes, and when the runbook's history expects the end
(only for a wait paced by a forecast, :mod:`drills.forecast_poll`). Elsewhere (cron, CI), a
plain log line per poll, at most every ``every_s`` seconds of a wait, so a 6-hour restore writes
a few dozen lines, not hundreds. A wait that ends at its first poll leaves no trace.

:func:`render` and :func:`fields` are pure (tested with literal strings); :class:`ProgressSink`
is the only part that writes, and it never raises: a closed stderr must not fail a drill.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TextIO

import structlog

from drills.forecast_poll import ForecastPollPolicy
from drills.wait import PollEvent

__all__ = ["ProgressSink", "duration", "expected_finish", "fields", "render", "status_of"]

EVERY_S = 300.0  # plain lines: at most one per 5 minutes of a wait

# An AWS describe answer carries its state under one of these keys (instance, cluster).
_STATUS_KEYS = ("DBInstanceStatus", "Status")


def status_of(value: Any) -> str | None:
    """The state a poll saw, when its answer says one (an AWS describe answer); else None."""
    if isinstance(value, Mapping):
        for key in _STATUS_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for one terminal line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def expected_finish(event: PollEvent) -> datetime | None:
    """When the history expects this wait to end: only for a wait paced by a forecast."""
    policy = event.policy
    if not isinstance(policy, ForecastPollPolicy) or policy.forecast is None:
        return None
    return event.started_at + timedelta(seconds=policy.forecast.expected_s - policy.offset_s)


def _clock_time(at: datetime) -> str:
    return at.strftime("%H:%M:%S UTC")


def render(event: PollEvent) -> str:
    """The one line shown for ``event``."""
    state = status_of(event.value)
    polls = f"{event.polls} poll" + ("" if event.polls == 1 else "s")
    took = duration(event.elapsed_s)
    if event.outcome == "ready":
        return f"{event.what}: {state or 'ready'} after {took}, {polls}"
    if event.outcome == "failed":
        return f"{event.what}: failed after {took}, {polls}"
    if event.outcome == "timed-out":
        return f"{event.what}: {state or 'not ready'} after {took}, {polls}: out of time"
    parts = [f"{event.what}: {state or 'waiting'}", f"{took} elapsed", polls]
    if event.next_in_s is not None:
        parts.append(f"next poll in {duration(event.next_in_s)}")
    expected = expected_finish(event)
    if expected is not None:
        now = event.started_at + timedelta(seconds=event.elapsed_s)
        late = (now - expected).total_seconds()
        parts.append(f"expected ~{_clock_time(expected)}" + (f" ({duration(late)} late)" if late >= 1 else ""))
    return ", ".join(parts)


def fields(event: PollEvent) -> dict[str, Any]:
    """The same facts as log fields, for a plain (non-terminal) log line."""
    expected = expected_finish(event)
    out: dict[str, Any] = {
        "what": event.what,
        "outcome": event.outcome,
        "status": status_of(event.value),
        "elapsed_s": round(event.elapsed_s),
        "polls": event.polls,
    }
    if event.next_in_s is not None:
        out["next_poll_in_s"] = round(event.next_in_s)
    if expected is not None:
        out["expected_finish"] = expected.isoformat().replace("+00:00", "Z")
    return out


class ProgressSink:
    """The ``on_poll`` of a run: a live line on a terminal, rate-limited log lines elsewhere."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, every_s: float = EVERY_S) -> None:
        self.stream = stream or sys.stderr
        self.tty = self._isatty() if tty is None else tty
        self.every_s = every_s
        self._shown_at: float | None = None  # elapsed_s of this wait's last shown line; None: nothing shown yet
        self._log = structlog.get_logger("drills.progress")

    def _isatty(self) -> bool:
        """A terminal, unless the logs on it are JSON (``--log-format json``): a program reads those."""
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            return False
        renderers = structlog.get_config().get("processors", [])
        return tty and not any(isinstance(r, structlog.processors.JSONRenderer) for r in renderers)

    def __call__(self, event: PollEvent) -> None:
        if event.outcome == "pending" and event.polls == 1:
            self._shown_at = None  # a new wait
        final = event.outcome != "pending"
        if final and self._shown_at is None:
            return  # ended at its first poll: nothing to report
        if self.tty:
            self._rewrite(render(event), final=final)
        elif final or self._shown_at is None or event.elapsed_s - self._shown_at >= self.every_s:
            self._log.info("waiting", **fields(event))
        else:
            return
        self._shown_at = None if final else event.elapsed_s

    def _rewrite(self, line: str, *, final: bool) -> None:
        width = shutil.get_terminal_size((100, 24)).columns
        text = "  " + line
        if len(text) >= width:  # a wrapped line cannot be rewritten in place
            text = text[: max(10, width - 2)] + "…"
        try:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.stream.flush()
        except (OSError, ValueError):
            self.tty = False  # stderr is gone or closed: stop drawing
