"""A shared AWS API budget for many drills at once (``drill fleet --budget``).

AWS throttles each account per region with token buckets of its own; twenty drills polling
one region must not spend the account's budget that production also needs. Every attempt of
every call an :class:`~drills.aws.calls.AwsCaller` makes takes a token first (retries too: AWS
counts them), from the bucket of the call's (account, region).

``--budget N`` promises that **no 1-second window holds more than N calls** per (account,
region). A token bucket that holds at most B tokens and refills at R per second lets through at
most ``B + R * T`` calls in any window of T seconds; so B = max(1, N // 10) and R = N - B - slack
(:func:`split_budget`): small bursts (a drill's preflight) pass at once, and the rate stays below
N even as requests leave a little after their tokens were taken.

A caller takes a token when it really goes on: a waiting caller checks once per token period
(:func:`drills.wait.until`), and whoever checks first after a token comes back takes it. A token
reserved ahead of time (the generic cell rate algorithm) would be fairer, but a thread that wakes
late on a loaded machine would then spend a token of the past alongside punctual callers, and a
second could see more calls than the budget (measured: 49 in a second against 40). The bucket's
one lock is never held while sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drills.clock import Clock
from drills.errors import TransientError
from drills.wait import every, until

_EPSILON = 1e-3  # 0.999 of a token is one: sleeps in integer nanoseconds refill a hair short, and a
# waiter short by 1e-8 would wait a whole period more (1e-3 is 25 µs early at 40/s, inside the slack)
MAX_WAIT_SECONDS = 3600.0  # a call that waited an hour for its token is a budget far too small: fail it

__all__ = ["BucketStats", "Budget", "DrillLimiter", "TokenBucket", "split_budget"]


def split_budget(calls_per_second: float) -> tuple[float, float]:
    """(refill rate per second, capacity) such that no 1 s window exceeds ``calls_per_second``.

    B = max(1, N // 10) saved tokens, and a slack of max(1, N // 20) calls per second kept for the
    time between taking a token and the request leaving (a busy interpreter runs other threads in
    between: 49 calls in a second against 40 measured without any slack, 41 with the tokens taken
    late but no slack); the refill is what is left: R = N - B - slack.
    """
    if not calls_per_second >= 3:  # B = 1, slack 1 and R > 0
        raise ValueError(f"a budget must be at least 3 calls per second, not {calls_per_second}")
    burst = float(max(1, int(calls_per_second // 10)))
    slack = float(max(1, int(calls_per_second // 20)))
    return calls_per_second - burst - slack, burst


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

    def try_take(self) -> bool:
        """Take a token if one is there now."""
        with self._lock:
            now = self.clock.monotonic_ns()
            self._tokens = min(self.capacity, self._tokens + (now - self._at_ns) / 1e9 * self.rate)
            self._at_ns = now
            if self._tokens < 1.0 - _EPSILON:
                return False
            self._tokens -= 1.0
            return True

    def take(self) -> None:
        """Wait on the bucket's clock (whose sleep may raise: a fleet's cancel) until a token is there.

        Checked at the time the caller really goes on, never promised ahead: a thread that wakes
        late (a loaded machine) must not spend a token from the past, or late callers would bunch
        up with punctual ones and a second could see more calls than the budget.
        """
        start = self.clock.monotonic_ns()
        waited = 0.0
        if not self.try_take():
            period = every(1.0 / self.rate)  # one token's time: who checks first after it comes, goes
            if not until(self.clock, MAX_WAIT_SECONDS, self.try_take, "a token of the AWS budget", policy=period):
                raise TransientError(
                    f"no AWS budget token within {MAX_WAIT_SECONDS:.0f}s", hint="raise --budget or lower --parallel"
                )
            waited = (self.clock.monotonic_ns() - start) / 1e9
        with self._lock:
            self.stats.calls += 1
            if waited > 0:
                self.stats.waited += 1
                self.stats.wait_seconds += waited
                self.stats.max_wait_seconds = max(self.stats.max_wait_seconds, waited)


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
