"""Injectable time.

Every wait in the tool goes through a :class:`Clock`, so tests of multi-hour
restores run in milliseconds and durations come from a monotonic source
(never negative, whatever the wall clock does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "iso", "iso_epoch"]


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    def monotonic_ns(self) -> int:
        """A monotonic counter for durations."""

    def sleep(self, seconds: float) -> None:
        """Wait; fake clocks advance instead."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


@dataclass
class FakeClock:
    """A clock that only moves when slept on or advanced; for tests."""

    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    _ns: int = 0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> datetime:
        return self.start + timedelta(microseconds=self._ns // 1000)

    def monotonic_ns(self) -> int:
        return self._ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._ns += max(0, int(seconds * 1e9))


def iso(dt: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, the one format evidence uses."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_epoch(ts: int | None) -> str | None:
    """A Unix timestamp (seconds) in the evidence format; None stays None."""
    return iso(datetime.fromtimestamp(ts, UTC)) if ts is not None else None
