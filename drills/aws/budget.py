"""A shared AWS API budget for many drills at once (``drill fleet --budget``).

AWS throttles each account per region with token buckets of its own; twenty drills polling
one region must not spend the account's budget that production also needs. Every attempt of
every call an :class:`~drills.aws.calls.AwsCaller` makes takes a token first (retries too: AWS
counts them), from the bucket of the call's (account, region).

``--budget N`` promises that **no 1-second window holds more than N calls** per (account,
region). A token bucket that holds at most B tokens and refills at R per second lets through at
most ``B + R * T`` calls in any window of T seconds; so B = max(1, N // 10) and R = N - B: small
bursts (a drill's preflight) pass at once, and the steady rate stays at or below N.

Tokens are reserved, not polled for (the generic cell rate algorithm): a caller takes its token
now, possibly into debt, and sleeps until its turn. Callers are served in order, no thread spins,
and the bucket's one lock is never held while sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drills.clock import Clock

__all__ = ["BucketStats", "Budget", "DrillLimiter", "TokenBucket", "split_budget"]


def split_budget(calls_per_second: float) -> tuple[float, float]:
    """(refill rate per second, capacity) such that no 1 s window exceeds ``calls_per_second``."""
    if not calls_per_second >= 2:  # B = 1 and R = N - 1 > 0: one call per second would refill nothing
        raise ValueError(f"a budget must be at least 2 calls per second, not {calls_per_second}")
    burst = float(max(1, int(calls_per_second // 10)))
    return calls_per_second - burst, burst


@dataclass
class BucketStats:
    calls: int = 0
    waited: int = 0  # calls that had to wait for their token
    wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; full at the start."""

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and room for one token")
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self._tokens = capacity
        self._at_ns = clock.monotonic_ns()
        self._lock = threading.Lock()
        self.stats = BucketStats()

    def reserve(self) -> float:
        """Take one token now; the seconds to wait before using it (0.0 when one was there)."""
        with self._lock:
            now = self.clock.monotonic_ns()
            self._tokens = min(self.capacity, self._tokens + (now - self._at_ns) / 1e9 * self.rate)
            self._at_ns = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            self.stats.calls += 1
            if wait > 0:
                self.stats.waited += 1
                self.stats.wait_seconds += wait
                self.stats.max_wait_seconds = max(self.stats.max_wait_seconds, wait)
            return wait

    def take(self) -> None:
        """Wait for a token on the bucket's clock (whose sleep may raise: a fleet's cancel)."""
        wait = self.reserve()
        if wait > 0:
            self.clock.sleep(wait)


class Budget:
    """One token bucket per (account, region), created on first use; the limiter ``AwsCaller`` takes.

    ``account``: the account every call goes to (one credential chain per process: the fleet
    asks STS once). The region is the calling client's own (``client.meta.region_name``), so a
    call to another region counts against that region.
    """

    def __init__(
        self,
        calls_per_second: float,
        clock: Clock,
        account: str,
        *,
        default_region: str = "unknown",
        bucket: Callable[[float, float, Clock], TokenBucket] = TokenBucket,
    ) -> None:
        self.calls_per_second = calls_per_second
        self.rate, self.capacity = split_budget(calls_per_second)
        self.clock = clock
        self.account = account
        self.default_region = default_region
        self._make = bucket
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, region: str) -> TokenBucket:
        key = (self.account, region)
        with self._lock:
            if key not in self._buckets:
                self._buckets[key] = self._make(self.rate, self.capacity, self.clock)
            return self._buckets[key]

    def take(self, client: Any, default_region: str | None = None) -> None:
        """Before one attempt of one call of ``client`` (a boto3 client, or None when unknown)."""
        meta = getattr(client, "meta", None)
        region = getattr(meta, "region_name", None) or default_region or self.default_region
        self.bucket(str(region)).take()

    def for_drill(self, region: Callable[[], str | None]) -> DrillLimiter:
        """The limiter one drill's ``AwsCaller`` takes from; ``region``: the drill's own, asked when needed."""
        return DrillLimiter(self, region)

    def stats(self) -> dict[tuple[str, str], BucketStats]:
        with self._lock:
            return {k: b.stats for k, b in self._buckets.items()}


class DrillLimiter:
    """One drill's view of the shared :class:`Budget`.

    A call made through a wrapper (``call(lambda: rds.delete_db_instance(...))``) shows no client,
    so it is charged to the drill's own region rather than to a bucket of its own: every call counts
    against the bucket AWS would count it in.
    """

    def __init__(self, budget: Budget, region: Callable[[], str | None]) -> None:
        self.budget = budget
        self._region = region

    def take(self, client: Any) -> None:
        region = None
        if getattr(getattr(client, "meta", None), "region_name", None) is None:
            try:
                region = self._region()
            except Exception:  # no region configured: the drill's own preflight says so
                region = None
        self.budget.take(client, region)
