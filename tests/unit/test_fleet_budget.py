"""The fleet's shared AWS budget (token bucket per account and region), its cancel token and its exit code,
on a fake clock with literal expectations."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from drills import cancel
from drills.aws.budget import Budget, TokenBucket, split_budget
from drills.aws.calls import AwsCaller
from drills.clock import FakeClock, SystemClock
from drills.errors import Interrupted
from drills.fleet import FleetResult, FleetRow, worst_exit


def test_a_budget_splits_into_refill_burst_and_slack_that_add_up_to_it() -> None:
    assert split_budget(40) == (34.0, 4.0)  # + 2 slack
    assert split_budget(20) == (17.0, 2.0)  # + 1 slack
    assert split_budget(3) == (1.0, 1.0)  # + 1 slack
    for too_small in (2.5, 0.5, float("nan")):  # one token saved and none refilled would stop every drill
        with pytest.raises(ValueError, match="at least 3 calls per second"):
            split_budget(too_small)
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0.0, 1.0, FakeClock())


def test_tokens_are_taken_when_there_and_refill_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=2.0, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]  # two saved, then none
    clock.advance(0.5)  # one back
    assert [bucket.try_take() for _ in range(2)] == [True, False]
    clock.advance(10.0)  # a long pause saves at most the capacity
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    bucket.take()  # waits one token's time on the clock
    assert clock.sleeps == [0.5]
    assert (bucket.stats.calls, bucket.stats.waited, bucket.stats.max_wait_seconds) == (1, 1, 0.5)


def _call_times(budget: float, calls: int) -> list[float]:
    clock = FakeClock()
    rate, burst = split_budget(budget)
    bucket = TokenBucket(rate, burst, clock)
    times = []
    for _ in range(calls):
        bucket.take()  # sleeps on the fake clock
        times.append(clock.monotonic_ns() / 1e9)
    return times


def _max_in_one_second(times: list[float]) -> int:
    return max(sum(1 for u in times if t <= u <= t + 1.0) for t in times)


def test_no_one_second_window_holds_more_calls_than_the_budget() -> None:
    times = _call_times(10, 100)  # burst 1, refill 8/s (1 slack): a call every 1/8 s
    assert times[:3] == [0.0, 0.125, 0.25]
    assert times[-1] == pytest.approx(12.375, abs=1e-6)  # 99 waits of 1/8 s
    assert _max_in_one_second(times) == 9
    times = _call_times(50, 300)  # burst 5, refill 43/s (2 slack)
    assert times[4] == 0.0 and times[5] == pytest.approx(1 / 43, abs=1e-6)
    assert _max_in_one_second(times) == 48


def test_each_account_and_region_has_its_own_bucket() -> None:
    clock = FakeClock()
    budget = Budget(10, clock, "123456789012")

    def client(region: str) -> Any:
        return SimpleNamespace(meta=SimpleNamespace(region_name=region))

    budget.take(client("us-east-1"))  # the burst of one, each region its own
    budget.take(client("eu-west-1"))
    assert clock.sleeps == []
    budget.take(client("us-east-1"))
    assert clock.sleeps == [0.125]
    budget.take(None)  # a call whose client is unknown counts against "unknown", never against nothing
    stats = budget.stats()
    assert sorted(stats) == [
        ("123456789012", "eu-west-1"),
        ("123456789012", "unknown"),
        ("123456789012", "us-east-1"),
    ]
    assert stats[("123456789012", "us-east-1")].calls == 2


class _Recorder:
    def __init__(self) -> None:
        self.clients: list[Any] = []

    def take(self, client: Any) -> None:
        self.clients.append(client)


def test_every_attempt_of_an_aws_call_takes_a_token_retries_included() -> None:
    clock = FakeClock()
    limiter = _Recorder()
    client = SimpleNamespace(meta=SimpleNamespace(region_name="us-east-1"), n=0)

    def describe_db_instances() -> str:
        client.n += 1
        if client.n < 3:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "DescribeDBInstances")
        return "ok"

    client.describe_db_instances = describe_db_instances
    call = AwsCaller(clock, clock.monotonic_ns() + 600 * 10**9, limiter=limiter)
    assert call(client.describe_db_instances) == "ok"
    assert len(limiter.clients) == 3
    # a plain function has no client: the limiter is told None (the budget's default region)
    AwsCaller(clock, clock.monotonic_ns() + 10**9, limiter=limiter)(lambda: None)
    assert limiter.clients[-1] is None


def test_worst_exit_code_order() -> None:
    assert worst_exit([]) == 0
    assert worst_exit([0, 1, 0]) == 1
    assert worst_exit([1, 2, 0]) == 2
    assert worst_exit([2, 130, 1]) == 130
    assert worst_exit([130, 3, 0]) == 3
    assert worst_exit([0, 141]) == 3  # a code the order does not know ranks as the worst
    row = FleetRow(Path("a.yaml"), "a", "passed", 0)
    assert FleetResult([row], interrupted=False).exit_code == 0
    assert FleetResult([row], interrupted=True).exit_code == 130


def test_a_cancel_token_interrupts_only_while_armed() -> None:
    token = cancel.CancelToken()
    clock = cancel.CancellableClock(FakeClock())
    token.cancel("fleet interrupted by SIGTERM")
    clock.sleep(5)  # no token watched: a lone drill's clock
    with cancel.watching(token):
        clock.sleep(5)  # watched but not armed (teardown): sleeps on
        with cancel.armed(True), pytest.raises(Interrupted, match="SIGTERM"):
            clock.sleep(5)
        with cancel.armed(True), cancel.armed(False):
            clock.sleep(5)
            cancel.check()
    assert clock.inner.sleeps == [5, 5, 5]  # type: ignore[attr-defined]


def test_a_long_real_sleep_wakes_when_the_token_is_set() -> None:
    token = cancel.CancelToken()
    clock = cancel.CancellableClock(SystemClock())
    threading.Timer(0.1, token.cancel, args=("fleet interrupted by SIGINT",)).start()
    start = time.monotonic()
    with cancel.watching(token), cancel.armed(True), pytest.raises(Interrupted):
        clock.sleep(60)  # an RDS poll's interval
    assert time.monotonic() - start < 5  # generous for a loaded machine; 60 without the token


def test_a_call_through_a_wrapper_counts_in_its_drills_region_not_in_a_bucket_of_its_own() -> None:
    clock = FakeClock()
    budget = Budget(10, clock, "123456789012")
    drill = budget.for_drill(lambda: "eu-west-1")
    eu = SimpleNamespace(meta=SimpleNamespace(region_name="eu-west-1"))
    drill.take(eu)  # the burst of one
    drill.take(None)  # `call(lambda: rds.delete_db_instance(...))`: no client to read a region from
    assert clock.sleeps == [0.125]  # it waited: the same bucket
    assert sorted(budget.stats()) == [("123456789012", "eu-west-1")]
    broken = budget.for_drill(lambda: (_ for _ in ()).throw(RuntimeError("no region")))
    broken.take(None)  # a drill without a region still pays, in the budget's "unknown" bucket
    assert ("123456789012", "unknown") in budget.stats()


def test_two_drills_creating_the_runs_directory_at_once_both_get_a_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a fleet met in a fresh home (exit 2 "cannot create the journal"): another drill makes
    ``runs/`` between this one's look and its mkdir."""
    from drills import journal

    home = tmp_path / "home"
    journal.secure_home(home)
    real_lstat = os.lstat
    raced: list[str] = []

    def lstat_then_lose_the_race(path: Any, *a: Any, **k: Any) -> Any:
        if str(path).endswith("/runs") and not raced:
            raced.append(str(path))
            os.mkdir(path, 0o700)  # the other drill wins
            raise FileNotFoundError(path)
        return real_lstat(path, *a, **k)

    monkeypatch.setattr(os, "lstat", lstat_then_lose_the_race)
    j = journal.Journal.create("20260101T000000Z-abcdef", FakeClock(), home)
    j.close()
    assert raced == [str(home / "runs")]
    assert (home / "runs" / "20260101T000000Z-abcdef" / "journal.jsonl").is_file()


def test_an_unreadable_answer_is_retried_like_a_5xx() -> None:
    """An HTML error page where XML was expected (a proxy's 502, moto's server under load): tried again."""
    from botocore.parsers import ResponseParserError

    clock = FakeClock()
    answers: list[str] = []

    def describe() -> str:
        answers.append("attempt")
        if len(answers) < 3:
            raise ResponseParserError("Unable to parse response (syntax error), invalid XML received: <html>502")
        return "ok"

    assert AwsCaller(clock, clock.monotonic_ns() + 600 * 10**9)(describe) == "ok"
    assert len(answers) == 3
