"""``drill demo --engine mariadb`` end to end: the demo source is built quickly, its runbook
loads, and a full drill through the runner passes, restoring exactly the rows before the target."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from maria_helpers import requires_mariadb, scratch_dir

from drills.clock import SystemClock
from drills.demo.mariadb import DemoSource, build_demo_source
from drills.engines.mariadb.declaration import MariadbPitrSource
from drills.osutil import pids_using
from drills.runbook import load_runbook

pytestmark = [*requires_mariadb, pytest.mark.slow]


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with scratch_dir("rd-maria-demo-") as d:
        yield d


@pytest.fixture(scope="module")
def built(base: Path) -> tuple[DemoSource, float]:
    t0 = time.monotonic()
    demo = build_demo_source(base / "demo", SystemClock())
    return demo, time.monotonic() - t0


def test_demo_source_is_quick_and_consistent(built: tuple[DemoSource, float]) -> None:
    demo, seconds = built
    assert seconds < 45, demo.timings
    assert demo.target_time.microsecond == 0  # a whole second: binlog timestamps are whole seconds
    assert demo.last_order_before_target < demo.target_time <= demo.first_order_after_target
    assert demo.expected["orders"] > 1500 and demo.after_target["orders"] > 0
    assert demo.expected["order_items"] > 3000
    assert (demo.backup / "xtrabackup_binlog_info").exists()
    assert sorted(p.name for p in demo.binlogs.glob("mysql-bin.0*")) == ["mysql-bin.000001", "mysql-bin.000002"]
    assert not pids_using(demo.workdir)  # the source server was stopped
    loaded = load_runbook(demo.runbook)
    assert isinstance(loaded.runbook.source, MariadbPitrSource)
    assert loaded.runbook.source.target_time == demo.target_time
    smoke = {q.name: q.expect for q in loaded.runbook.validators.smoke}
    assert smoke["orders before the target are present"] == demo.expected["orders"]
    assert smoke["no order at or after the target"] == 0


def test_demo_drill_passes_through_the_runner(
    built: tuple[DemoSource, float], base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drills.api import RunOptions, run_drill

    demo, _ = built
    home = base / "home"
    monkeypatch.setenv("RESTORE_DRILLS_HOME", str(home))
    scratch = base / "scratch"
    scratch.mkdir()
    res = run_drill(load_runbook(demo.runbook), RunOptions(home=home, scratch_root=scratch))
    assert res.verdict == "passed", (res.error, [f for f in res.findings if not f.get("passed")])
    assert res.exit_code == 0
    assert res.findings and all(f["passed"] for f in res.findings)
    assert res.rto_seconds is not None and res.rto_seconds < 60
    assert res.evidence is not None and res.evidence.exists()
    assert not pids_using(scratch)
    assert not any(scratch.iterdir())  # the run's scratch directory is gone
