"""``drill fleet``'s runner: RDS drills on moto, concurrently, validated against the real local PostgreSQL.

Each drill gets its own boto3 session (as in production: sessions are not thread-safe) with the
restore phases of :class:`aws_fakes.Fakes` on a shared :class:`fleet_helpers.ScaledClock`
(1000x: a 10-minute restore takes 0.6 s). The budget counts real seconds, measured here at
``before-send`` on every session: the calls AWS would see.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog
from moto import mock_aws

from drills.api import RunOptions, default_key_path
from drills.errors import InputError
from drills.evidence.chain import verify_directory
from drills.evidence.keys import load_verifiers
from drills.fleet import NOT_RUN, FleetOptions, load_fleet, run_fleet
from drills.runbook import LoadedRunbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared helpers
from aws_fakes import REGION, Fakes, World, drill_leftovers, make_world
from dataplane import PgPlane
from fleet_helpers import CallLog, ScaledClock, add_sources, drop_users, watch_masters, write_runbook

SCALE = 1000.0


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield make_world(boto3.Session(region_name=REGION), rds=False)


@pytest.fixture
def sources(world: World, plane: PgPlane) -> Iterator[list[tuple[str, str]]]:
    made = add_sources(world, plane, 4)
    yield made
    drop_users(plane, [user for user, _ in made])


def _options(plane: PgPlane, log: CallLog, tmp: Path, fakes: dict[str, dict[str, Any]], **kw: Any) -> FleetOptions:
    """Per drill: a new session with its fake restore phases (by runbook name), the master watch, the call log."""
    clock = ScaledClock(SCALE)

    def session_for(lr: LoadedRunbook) -> Any:
        session = boto3.Session(region_name=REGION)
        phases = fakes.get(lr.runbook.name, {"restore_seconds": 600, "modify_seconds": 60})
        Fakes(clock, **phases).install(session)  # type: ignore[arg-type]  # it reads only now() of its clock
        watch_masters(session, plane)
        log.watch(session)
        return session

    run = RunOptions(clock=clock, scratch_root=tmp)
    return FleetOptions(run=run, session_for=session_for, **kw)


def test_a_mixed_fleet_runs_every_drill_within_its_budget_and_exits_with_the_worst_code(
    world: World, plane: PgPlane, sources: list[tuple[str, str]], tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    snaps = [snap for _, snap in sources]
    paths = [
        write_runbook(tmp_path / "a.yaml", world, plane, "orders", snaps[0], evidence),
        write_runbook(tmp_path / "b.yaml", world, plane, "orders", snaps[1], evidence),  # same chain, concurrently
        write_runbook(tmp_path / "c.yaml", world, plane, "billing", snaps[2], evidence, rows=999),
        write_runbook(tmp_path / "d.yaml", world, plane, "ledger", snaps[3], evidence),
        write_runbook(tmp_path / "e.yaml", world, plane, "stock", snaps[0], evidence),
    ]
    log = CallLog()
    fakes = {"ledger": {"restore_seconds": 600, "terminal_status": "failed"}}  # its restore ends failed
    opts = _options(plane, log, tmp_path, fakes, parallel=3, budget=20, account="123456789012")
    start = time.monotonic()
    res = run_fleet(load_fleet(paths), opts)
    took = time.monotonic() - start

    got = [(r.runbook.name, r.verdict, r.exit_code) for r in res.rows]
    assert got == [
        ("a.yaml", "passed", 0),
        ("b.yaml", "passed", 0),
        ("c.yaml", "failed", 1),  # orders.equals 999: 3 rows
        ("d.yaml", "failed", 3),  # RestoreFailed: infrastructure
        ("e.yaml", "passed", 0),
    ], [r.error for r in res.rows]
    assert res.exit_code == 3 and not res.interrupted
    assert all(r.evidence is not None and r.evidence.is_file() for r in res.rows)
    assert all(r.rto_seconds is not None for r in res.rows if r.verdict == "passed")
    assert drill_leftovers(world.session) == []  # every drill tore down, the failed ones too
    # the budget, as AWS would count it: every call of every session, in real time
    assert log.max_per_second() <= 20, log.densest()
    assert len(log.calls) > 5 * 20  # not trivially within budget: the fleet had to wait
    assert took > len(log.calls) / 20 - 2
    # two drills of one runbook appended to one chain at once: seq 1 and 2, nothing forked
    report = verify_directory(evidence, load_verifiers(default_key_path().with_suffix(".pub")))
    assert report.ok, report.runbooks
    assert sorted(r.seq or 0 for r in report.runbooks["orders"][0]) == [1, 2]


def test_a_signalled_fleet_tears_down_every_running_drill_and_starts_no_more(
    world: World, plane: PgPlane, sources: list[tuple[str, str]], tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    paths = [
        write_runbook(tmp_path / f"r{i}.yaml", world, plane, f"slow-{i}", snap, evidence)
        for i, (_, snap) in enumerate(sources)
    ]
    log = CallLog()
    hours = {f"slow-{i}": {"restore_seconds": 4 * 3600} for i in range(4)}  # 14.4 s of real time each
    opts = _options(plane, log, tmp_path, hours, parallel=2, budget=50, account="123456789012")
    restores_seen = threading.Event()
    sent_at: list[float] = []

    def signal_once_restoring() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(1 for _, op in log.calls if op.startswith("RestoreDB")) < 2:
            restores_seen.wait(0.05)
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)  # to the main thread, where run_fleet handles it

    sender = threading.Thread(target=signal_once_restoring, daemon=True)
    swallow = signal.signal(signal.SIGTERM, lambda *_: None)  # a signal that outlives run_fleet never kills pytest
    try:
        sender.start()
        res = run_fleet(load_fleet(paths), opts)
        sender.join(70)
    finally:
        signal.signal(signal.SIGTERM, swallow)
    took = time.monotonic() - sent_at[0]

    assert res.interrupted and res.exit_code == 130
    assert [(r.verdict, r.exit_code) for r in res.rows[:2]] == [("failed", 130), ("failed", 130)]
    assert all("Interrupted" in (r.error or "") for r in res.rows[:2])
    assert all(r.evidence is not None and r.evidence.is_file() for r in res.rows[:2])  # evidence still written
    assert [(r.verdict, r.exit_code) for r in res.rows[2:]] == [(NOT_RUN, 130), (NOT_RUN, 130)]
    assert sum(1 for _, op in log.calls if op.startswith("RestoreDB")) == 2
    assert drill_leftovers(world.session) == []
    assert took < 10  # from the signal to the end; the restores alone would take 14.4 s more


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")  # not a runbook either: loading stops at the first bad file
    with pytest.raises(InputError, match=r"missing\.yaml: no such runbook"):
        load_fleet([tmp_path / "missing.yaml"])
    with pytest.raises(InputError, match=r"given twice"):
        load_fleet([good, tmp_path / "." / "good.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \*\.yaml runbook"):
        load_fleet([tmp_path / "empty"])


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_the_fleet_command_prints_one_table_and_exits_with_the_worst_code(
    as_json: bool,
    world: World, plane: PgPlane, sources: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """``drill fleet DIR`` end to end: the drills make their own default boto3 sessions, here moto's with the
    data plane watching, as production's would be the machine's credentials."""
    rbs = tmp_path / "rbs"
    rbs.mkdir()
    evidence = tmp_path / "evidence"
    write_runbook(rbs / "a.yaml", world, plane, "alpha", sources[0][1], evidence)
    write_runbook(rbs / "b.yaml", world, plane, "beta", sources[1][1], evidence, rows=999)
    write_runbook(rbs / "c.yaml", world, plane, "gamma", sources[2][1], evidence)
    real_session = boto3.Session
    log = CallLog()

    def default_session(*args: Any, **kw: Any) -> Any:
        session = real_session(*args, **kw)
        watch_masters(session, plane)
        log.watch(session)
        return session

    monkeypatch.setattr(boto3, "Session", default_session)
    request.addfinalizer(structlog.reset_defaults)  # main() pointed the logs at this test's captured stderr
    from drills.cli import main

    args = ["fleet", str(rbs), "--parallel", "3", "--budget", "10", "--scratch", str(tmp_path)]
    code = main([*args, "--json"] if as_json else args)
    text = capsys.readouterr().out
    assert code == 1
    assert log.max_per_second() <= 10, log.densest()
    assert drill_leftovers(world.session) == []
    if as_json:
        doc = json.loads(text)
        assert doc["exit_code"] == 1 and doc["interrupted"] is False
        assert [(d["name"], d["verdict"], d["exit_code"]) for d in doc["drills"]] == [
            ("alpha", "passed", 0),
            ("beta", "failed", 1),
            ("gamma", "passed", 0),
        ]
        (budget,) = doc["budget"]
        assert (budget["account"], budget["region"], budget["calls_per_second"]) == ("123456789012", "us-east-1", 10)
        assert budget["calls"] >= len(log.calls) - 1  # every call sent took a token (but the fleet's STS question)
        return
    out = text.splitlines()
    assert out[0].split() == ["runbook", "verdict", "RTO", "exit", "evidence"]
    rows = [line.split() for line in out[1:4]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (str(rbs / "a.yaml"), "passed", "0"),
        (str(rbs / "b.yaml"), "failed", "1"),
        (str(rbs / "c.yaml"), "passed", "0"),
    ]
    assert all(Path(r[4]).is_file() and Path(r[4]).parent == evidence for r in rows)
    assert out[4].startswith("AWS budget 10/s for 123456789012 us-east-1: ")
    assert out[5] == "3 drill(s), 1 not passed; exit 1"


def test_local_drills_run_side_by_side_in_one_fleet(demo_dump: Path, tmp_path: Path) -> None:
    """Threads hold for local drills too: two throwaway PostgreSQL servers at once, plus one damaged dump; each
    server is gone afterwards, and one failure does not stop the others."""
    import subprocess

    data = demo_dump.read_bytes()
    paths = []
    for name, dump in (("shop-a", data), ("shop-b", data), ("shop-cut", data[: len(data) * 2 // 3])):
        d = tmp_path / name
        d.mkdir()
        (d / "shop.pgc").write_bytes(dump)
        (d / "rb.yaml").write_text(
            f"name: {name}\n"
            "source: {kind: postgres-dump, archive: shop.pgc, database: shop}\n"
            "objectives: {rto_seconds: 120}\n"
            "validators: {row_counts: {customers: {equals: 2000}}}\n"
            f"evidence: {{dir: {tmp_path / 'evidence'}}}\n"
        )
        paths.append(d / "rb.yaml")
    res = run_fleet(load_fleet(paths), FleetOptions(parallel=3))  # scratch: the temp directory, as for `drill run`
    got = [(r.name, r.verdict) for r in res.rows]
    assert got == [("shop-a", "passed"), ("shop-b", "passed"), ("shop-cut", "failed")], [r.error for r in res.rows]
    assert res.rows[2].exit_code in (2, 3)  # the damaged archive: pg_restore could not read it
    assert res.exit_code == res.rows[2].exit_code
    assert all(r.evidence is not None and r.evidence.is_file() for r in res.rows)
    running = subprocess.run(["pgrep", "-af", "postgres"], capture_output=True, text=True, check=False).stdout
    assert not [r.run_id for r in res.rows if r.run_id and r.run_id in running]
    scratch = Path(tempfile.gettempdir())
    assert not [r.run_id for r in res.rows if (scratch / f"restore-drill-{r.run_id}").exists()]
