"""SIGTERM while a validator's query runs: `drill run` stops at once, tears down, writes evidence.

systemd and Kubernetes send SIGTERM and, a grace period later (10 s by
default in systemd, 30 s in Kubernetes), SIGKILL. A drill that waits for a
60 s check before tearing down is killed with the restored server still up.
These tests run the real `drill run` on the demo backup with a smoke query
that sleeps 60 s, wait until the restored server is really executing it,
and send the signals a supervisor would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from drills.demo.postgres import DemoSource
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import read_events, summarize

SLOW_SMOKE = """  smoke:
    - name: a check that takes a minute
      sql: "select 1 from pg_sleep(60)"
      expect: 1
"""


def slow_runbook(demo: DemoSource, dest: Path) -> Path:
    import shutil

    shutil.copytree(demo.workdir, dest, ignore=shutil.ignore_patterns("source", "evidence"))
    dest.chmod(0o755)
    text = (dest / "runbook.yaml").read_text()
    assert "  smoke:\n" in text
    (dest / "runbook.yaml").write_text(text.replace("  smoke:\n", SLOW_SMOKE, 1))
    return dest / "runbook.yaml"


def journal_of(home: Path) -> tuple[str, list[dict[str, Any]]]:
    runs = list((home / "runs").iterdir()) if (home / "runs").exists() else []
    if len(runs) != 1:
        return "", []
    path = runs[0] / "journal.jsonl"
    return runs[0].name, read_events(path) if path.exists() else []


def postmaster_of(events: list[dict[str, Any]]) -> tuple[Path, int] | None:
    """The restored server's data directory and postmaster pid, as the run journaled them at launch."""
    for e in reversed(events):
        r = e.get("resource") or {}
        if e.get("event") == "resource_registered" and r.get("kind") == "postgres-server" and "pid" in r["attrs"]:
            return Path(r["id"]), int(r["attrs"]["pid"])
    return None


def busy_backends(postmaster: int) -> list[str]:
    """Process titles of the server's backends that are executing a statement."""
    out = subprocess.run(
        ["ps", "--ppid", str(postmaster), "-o", "args="], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if line.rstrip().endswith("SELECT")]


def start_until_query_runs(runbook: Path, home: Path) -> tuple[subprocess.Popen[str], str, Path, int]:
    """`drill run` until the restored server is executing the 60 s check."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drills.cli", "run", str(runbook), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run_id, events = journal_of(home)
        assert proc.poll() is None, f"the drill ended before its slow check ran: {events[-3:]}"
        found = postmaster_of(events)
        if found and busy_backends(found[1]):
            return proc, run_id, found[0], found[1]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the slow check never started")


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts: it holds no files, ports or memory)."""
    deadline = time.monotonic() + 2  # pg_ctl stop returns when the pid file is gone, the exit follows
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_sigterm_during_a_60s_query_exits_130_within_10s_torn_down_with_evidence(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path
) -> None:
    runbook = slow_runbook(demo_source, tmp_path / "d")
    proc, run_id, datadir, postmaster = start_until_query_runs(runbook, drill_home)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, out[-2000:]
    print(f"drill exited {took:.2f}s after SIGTERM")
    assert took < 10, f"exit {took:.1f}s after SIGTERM"
    assert gone(postmaster) and not datadir.exists()
    result = json.loads(out)
    ev = read_and_verify(Path(result["evidence"]), load_verifiers(demo_source.public_key))["predicate"]
    assert ev["interrupted"] is True and ev["results"]["verdict"] == "failed"
    assert ev["error"]["state"] == "validate"
    assert ev["teardown"]["all_deleted"] is True
    assert summarize(run_id, read_events(drill_home / "runs" / run_id / "journal.jsonl")).outstanding == []


def test_sigkill_10s_after_sigterm_finds_nothing_left(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path
) -> None:
    runbook = slow_runbook(demo_source, tmp_path / "d")
    proc, run_id, datadir, postmaster = start_until_query_runs(runbook, drill_home)
    scratch = datadir.parent.parent
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)  # systemd's default TimeoutStopSec before it sends SIGKILL
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(0.5)
    assert gone(postmaster), "the restored server outlived the drill"
    assert not scratch.exists(), f"{scratch} outlived the drill"
    assert summarize(run_id, read_events(drill_home / "runs" / run_id / "journal.jsonl")).outstanding == []
    runs = subprocess.run(
        [sys.executable, "-m", "drills.cli", "runs", "--json"], capture_output=True, text=True, check=True
    )
    listed = {r["run_id"]: r for r in json.loads(runs.stdout)}
    assert listed[run_id]["outstanding"] == []
