"""Forecast polling through the real path: a runbook's signed history paces the next RDS restore's wait.

Whole drills run through ``run_drill`` on a fake clock against moto (restores that take about 2 hours,
injected by :class:`aws_fakes.Fakes`), validated on a real local PostgreSQL (``plane``). The history
is made of real earlier drills of the same runbook, in the same evidence directory: what the runner
reads is what the backend recorded, signed.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pty
import random
import re
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog
from moto import mock_aws

from drills.aws.aurora_declaration import AuroraSnapshotSource
from drills.aws.rds_declaration import RdsSnapshotSource
from drills.backends import backend_factory
from drills.clock import FakeClock
from drills.wait import PollEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aws_fakes import REGION, Fakes, Outcome, World, drill_leftovers, isolation, machine_drill, make_world, settings
from dataplane import PgPlane

# Restores of this runbook take about two hours (the truth each drill is measured against).
HISTORY_S = [7140.0, 7260.0, 7200.0, 7170.0]
TRUE_S = 7215.0


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def world(session: Any) -> World:
    return make_world(session)


def drill(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp: Path, n: int, *, aurora: bool = False, **kw: Any
) -> tuple[Outcome, Any]:
    common = {"region": REGION, "database": plane.database, "isolation": isolation(world)}
    src: Any = (
        AuroraSnapshotSource.model_validate(
            {"kind": "aurora-snapshot", "engine": "aurora-postgresql", "snapshot": world.cluster_snapshot, **common}
        )
        if aurora
        else RdsSnapshotSource.model_validate(
            {"kind": "rds-snapshot", "engine": "postgres", "snapshot": world.snapshot, **common}
        )
    )
    b = backend_factory("aurora" if aurora else "rds")(src, settings(session, clock, run_id=f"run-{n:04d}"))
    out = machine_drill(b, session, clock, plane, tmp, **kw)
    assert out.error is None, out.error
    assert out.result is not None and out.result.verdict == "passed"
    return out, b


def record(out: Outcome) -> dict[str, Any]:
    assert out.result is not None and out.result.evidence is not None
    envelope = json.loads(out.result.evidence.read_text())

    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return dict(statement["predicate"])


def available_error(out: Outcome, fakes: Fakes, ident: str, mark_name: str = "instance-available") -> float:
    mark = next(m for m in out.marks if m.name == mark_name)
    at = datetime.fromisoformat(mark.at.replace("Z", "+00:00"))
    return abs((at - fakes.ready_at[ident]).total_seconds())


def test_history_paces_the_wait_to_within_10s_at_no_more_describe_calls(
    world: World, session: Any, plane: PgPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The polls' jitter decides how precisely the history drills measured their restores, and so how wide
    # the forecast's window is (a very spread history widens the dense interval past 18 s): fixed here so
    # the test is the same every run. benchmarks/bench_aws_calls.py --paced measures the spread of outcomes.
    monkeypatch.setattr("drills.wait._RNG", random.Random(20261201))
    clock = FakeClock()
    fakes = Fakes(clock).install(session)
    waits = []
    for n, took in enumerate(HISTORY_S):
        fakes.restore_seconds = took
        out, _ = drill(world, session, clock, plane, tmp_path, n, run_waits=True)
        waits.append(record(out)["restore_wait"])
    # fewer than three measured drills before it: the plain policy, as without history
    assert [(w["policy"], w["history_drills"]) for w in waits] == [
        ("plain", 0),
        ("plain", 1),
        ("plain", 2),
        ("forecast", 3),
    ]
    assert waits[0]["forecast"] is None

    fakes.restore_seconds = TRUE_S
    fakes.calls.clear()
    paced, b = drill(world, session, clock, plane, tmp_path, 10, run_waits=True)
    paced_describes = fakes.count("DescribeDBInstances")
    paced_error = available_error(paced, fakes, b.instance_id)
    wait = record(paced)["restore_wait"]
    assert wait["policy"] == "forecast" and wait["history_drills"] == 4
    assert wait["forecast"]["window_interval_ms"] == 18_000  # dense polls, +/-9.9 s at most with jitter
    lo, hi = wait["forecast"]["window_ms"]
    assert lo < TRUE_S * 1000 < hi  # the history predicted this restore
    assert abs(wait["forecast"]["expected_ms"] - 7_200_000) < 90_000  # the median of what the backend measured

    fakes.calls.clear()
    plain, b2 = drill(world, session, clock, plane, tmp_path, 11)  # the backend's own settings: no forecast
    plain_describes = fakes.count("DescribeDBInstances")
    plain_error = available_error(plain, fakes, b2.instance_id)

    assert paced_error <= 10.0, paced_error
    assert paced_describes <= plain_describes, (paced_describes, plain_describes)
    mark = next(m for m in paced.marks if m.name == "instance-available")
    assert mark.precision_ms <= 10_000  # what the record claims holds the truth
    assert plain_error > paced_error or plain_describes > paced_describes
    assert drill_leftovers(session) == []


def test_a_forecast_that_is_wrong_is_survived_and_the_drill_still_passes(
    world: World, session: Any, plane: PgPlane, tmp_path: Path
) -> None:
    """The restore takes 1.5 times its history: after the window the plain growth takes over."""
    clock = FakeClock()
    fakes = Fakes(clock).install(session)
    for n, took in enumerate(HISTORY_S[:3]):
        fakes.restore_seconds = took
        drill(world, session, clock, plane, tmp_path, n, run_waits=True)
    fakes.restore_seconds = 1.5 * 7200
    fakes.calls.clear()
    out, b = drill(world, session, clock, plane, tmp_path, 5, run_waits=True)
    assert record(out)["restore_wait"]["policy"] == "forecast"
    mark = next(m for m in out.marks if m.name == "instance-available")
    assert available_error(out, fakes, b.instance_id) <= mark.precision_ms / 1000 + 1  # honest about its precision
    assert fakes.count("DescribeDBInstances") < 120


def test_the_progress_hook_hears_every_poll_of_the_restore(
    world: World, session: Any, plane: PgPlane, tmp_path: Path
) -> None:
    clock = FakeClock()
    fakes = Fakes(clock, restore_seconds=1800).install(session)
    heard: list[PollEvent] = []
    drill(world, session, clock, plane, tmp_path, 1, run_waits=True, progress=heard.append)
    restore = [e for e in heard if e.what.startswith("restore of")]
    assert restore[-1].outcome == "ready" and restore[-1].value["DBInstanceStatus"] == "available"
    assert [e.outcome for e in restore[:-1]] == ["pending"] * (len(restore) - 1)
    assert [e.value["DBInstanceStatus"] for e in restore[:-1]] == ["creating"] * (len(restore) - 1)
    assert restore[-1].polls == len(restore)  # one event per poll, the last one says ready
    assert fakes.count("DescribeDBInstances") >= restore[-1].polls


def test_on_a_terminal_the_drill_draws_one_live_line_per_wait(
    world: World, session: Any, plane: PgPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr is a real pseudo-terminal: the run's default progress display rewrites one line in place."""
    master, slave = pty.openpty()
    tty_err = open(slave, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    got = bytearray()

    def drain() -> None:  # a full pty buffer would block the drill's writes
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "stderr", tty_err)
    clock = FakeClock()
    Fakes(clock, restore_seconds=1800).install(session)
    try:
        _out, b = drill(world, session, clock, plane, tmp_path, 1, run_waits=True)  # progress: the run's default
    finally:
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        tty_err.close()
        reader.join(timeout=5)
        os.close(master)
    text = got.decode()
    lines = text.replace("\r\n", "\n").split("\n")
    restore = [ln for ln in lines if f"restore of {b.instance_id}" in ln]
    assert len(restore) == 1, restore  # one terminal line for the whole wait, ended by a newline
    frames = restore[0].split("\r\x1b[K")[1:]
    assert len(frames) > 10  # rewritten at each poll
    ident = re.escape(b.instance_id)
    assert re.fullmatch(rf"  restore of {ident}: creating, 0s elapsed, 1 poll, next poll in (9|10|11)s", frames[0])
    took = r"(\d+s|\d+m\d\ds)"
    pending = rf"  restore of {ident}: creating, {took} elapsed, \d+ polls, next poll in {took}"
    assert [f for f in frames[1:-1] if not re.fullmatch(pending, f)] == []
    assert re.fullmatch(rf"  restore of {ident}: available after 3\dm\d\ds, \d+ polls", frames[-1])


def test_not_on_a_terminal_a_two_hour_wait_logs_a_plain_line_every_five_minutes_at_most(
    world: World, session: Any, plane: PgPlane, tmp_path: Path
) -> None:
    clock = FakeClock()
    fakes = Fakes(clock, restore_seconds=7200).install(session)
    with structlog.testing.capture_logs() as logs:
        _out, b = drill(world, session, clock, plane, tmp_path, 1, run_waits=True)  # stderr is pytest's pipe
    lines = [e for e in logs if e["event"] == "waiting" and e["what"] == f"restore of {b.instance_id}"]
    polls = fakes.count("DescribeDBInstances")
    assert 2 <= len(lines) <= 7200 // 300 + 2 < polls  # far fewer lines than polls
    assert lines[0]["polls"] == 1 and lines[-1]["outcome"] == "ready" and lines[-1]["status"] == "available"
    gaps = [later["elapsed_s"] - sooner["elapsed_s"] for sooner, later in itertools.pairwise(lines[:-1])]
    assert all(g >= 299 for g in gaps), gaps  # (whole seconds: 299.6 s shows as 299 after 0 s)
    assert all(e["status"] == "creating" and e["next_poll_in_s"] > 0 for e in lines[:-1])


def test_aurora_history_paces_the_wait_for_the_cluster(session: Any, plane: PgPlane, tmp_path: Path) -> None:
    world = make_world(session, aurora=True, rds=False)
    clock = FakeClock()
    fakes = Fakes(clock, create_seconds=600).install(session)
    for n, took in enumerate(HISTORY_S[:3]):
        fakes.restore_seconds = took
        drill(world, session, clock, plane, tmp_path, n, aurora=True, run_waits=True)
    fakes.restore_seconds = TRUE_S
    out, b = drill(world, session, clock, plane, tmp_path, 9, aurora=True, run_waits=True)
    wait = record(out)["restore_wait"]
    assert (wait["policy"], wait["history_drills"]) == ("forecast", 3)
    assert available_error(out, fakes, b.cluster_id, "cluster-available") <= 10.0
    assert drill_leftovers(session) == []
