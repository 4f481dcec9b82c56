"""`drill run --keep TTL` on a real local PostgreSQL: kept until the TTL ends, then `drill sweep` removes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drills.api import RunOptions, RunResult, finish_teardown, run_drill
from drills.demo.postgres import DemoSource
from drills.keep import kept_json
from drills.runbook import load_runbook
from drills.sweep import sweep_local

pytestmark = pytest.mark.postgres


class ShiftedClock:
    """The real clock, its wall time moved forward: "ten minutes later" without waiting ten minutes."""

    def __init__(self, seconds: float) -> None:
        self.shift = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


def clock_at(when: datetime) -> ShiftedClock:
    """The real clock moved so that it reads ``when`` now: "just before the expiry" however long the test ran."""
    return ShiftedClock((when - datetime.now(UTC)).total_seconds())


def server_running(run_id: str) -> bool:
    out = subprocess.run(["pgrep", "-af", "postgres"], capture_output=True, text=True, check=False).stdout
    return run_id in out


def drill_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )


def no_aws_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }
    return env


def test_a_kept_server_lives_until_its_ttl_then_drill_sweep_removes_it(demo_source: DemoSource) -> None:
    before = datetime.now(UTC)
    res = run_drill(load_runbook(demo_source.runbook), RunOptions(keep_seconds=600))
    after = datetime.now(UTC)
    try:
        check_keep_then_sweep(res, before, after)
    finally:
        if server_running(res.run_id):  # a failed assertion must not leak the kept server
            finish_teardown(res.run_id)


def check_keep_then_sweep(res: RunResult, before: datetime, after: datetime) -> None:
    assert res.verdict == "passed", res.to_json()
    assert server_running(res.run_id)

    kept = kept_json(res.drill)
    assert kept is not None
    expires = datetime.fromisoformat(kept["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=600) <= expires <= after + timedelta(seconds=600)
    by_kind: dict[str, Any] = {r["kind"]: r for r in kept["resources"]}
    assert set(by_kind) == {"postgres-server", "scratch-dir"}
    assert all(r["expires_at"] == kept["expires_at"] for r in kept["resources"])
    assert kept["endpoint"] is not None and "password" not in json.dumps(kept).lower().replace('"password": null', "")
    datadir = Path(by_kind["postgres-server"]["id"])

    # now: nothing has expired, and a machine without AWS credentials still sweeps its local runs
    env = no_aws_env(AWS_DEFAULT_REGION="us-east-1")
    swept = drill_cli("sweep", env=env)
    assert swept.returncode == 0, swept.stderr
    assert "Traceback" not in swept.stderr and "no AWS credentials" in swept.stderr
    report = json.loads(swept.stdout)
    mine = [r for r in report["resources"] if r["run_id"] == res.run_id]
    assert {(r["scope"], r["action"]) for r in mine} == {("local", "kept")}
    assert all(r["expires_at"] == kept["expires_at"] and "kept for inspection until" in r["detail"] for r in mine)
    assert "aws" in report["skipped"]
    assert server_running(res.run_id)
    aws_only = drill_cli("sweep", "--scope", "aws", env=env)
    assert aws_only.returncode == 2 and "Traceback" not in aws_only.stderr
    assert aws_only.stderr.strip().splitlines() == [
        "InputError: AWS not swept: no AWS credentials (configure AWS credentials, or sweep --scope local)"
    ]

    # just before the expiry (read from the record, not from when the test started): still kept; just after: removed
    assert {
        r["action"]
        for r in sweep_local(timedelta(hours=6), False, clock_at(expires - timedelta(seconds=2)))
        if r["run_id"] == res.run_id
    } == {"kept"}
    preview = sweep_local(timedelta(hours=6), True, clock_at(expires + timedelta(seconds=1)))
    assert {r["action"] for r in preview if r["run_id"] == res.run_id} == {"would-delete"}
    assert server_running(res.run_id)
    removed = sweep_local(timedelta(hours=6), False, clock_at(expires + timedelta(seconds=1)))
    assert {(r["kind"], r["action"]) for r in removed if r["run_id"] == res.run_id} == {
        ("postgres-server", "deleted"),
        ("scratch-dir", "deleted"),
    }
    assert not server_running(res.run_id)
    assert not datadir.exists()

    runs = drill_cli("runs", "--json")
    assert runs.returncode == 0, runs.stderr
    entry = next(r for r in json.loads(runs.stdout) if r["run_id"] == res.run_id)
    assert entry["outstanding"] == [] and entry["kept_until"] == kept["expires_at"]
    assert sorted(s["kind"] for s in entry["swept"]) == ["postgres-server", "scratch-dir"]
    text = drill_cli("runs").stdout
    line = next(x for x in text.splitlines() if x.startswith(res.run_id))
    assert "swept: 2 resource(s)" in line and "drill teardown" not in line
