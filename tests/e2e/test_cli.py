"""The `drill` command as a user runs it: real processes, real servers, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drills.engines.postgres.server import find_pg_binaries
from drills.errors import PreflightError


def drill(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, Any]]:
    try:
        find_pg_binaries()
    except PreflightError as exc:
        pytest.skip(str(exc))
    root = Path(tempfile.mkdtemp(prefix="rd-e2e-"))  # reachable by the server's unprivileged user
    root.chmod(0o755)
    env = {"RESTORE_DRILLS_HOME": str(root / "home")}
    proc = drill("demo", "--workdir", str(root / "demo"), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    out["env"] = env
    yield out
    shutil.rmtree(root, ignore_errors=True)


def test_demo_in_a_directory_the_server_user_cannot_reach_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    res = drill("demo", "--workdir", str(private / "demo"), env={"RESTORE_DRILLS_HOME": str(tmp_path / "h")})
    tmp_path.chmod(0o700)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "not reachable by the user" in res.stderr and "/tmp" in res.stderr


def test_demo_passes_with_rto_rpo_and_verified_evidence(demo: dict[str, Any]) -> None:
    assert demo["verdict"] == "passed"
    assert demo["rto_seconds"] > 0 and demo["rto_seconds"] < demo["rto_objective_seconds"]
    assert 0 <= demo["rpo_seconds"] < 1
    assert demo["evidence_verified"] is True
    assert Path(demo["evidence"]).exists() and Path(demo["public_key"]).exists()
    assert {f["check"] for f in demo["findings"]} >= {"no order committed after the target"}
    assert servers_still_running(Path(demo["env"]["RESTORE_DRILLS_HOME"]), demo["run_id"]) == []


def servers_still_running(home: Path, run_id: str) -> list[str]:
    """The processes of the servers this run's journal recorded that still run: by pid (same process start,
    same boot) and by any process whose command line names the run's data directory. Other processes on the
    machine, other tests' servers included, are not looked at."""
    from drills.engines.postgres.teardown import SERVER_KIND
    from drills.journal import read_events
    from drills.osutil import ProcessIdentity, identity_of

    events = read_events(home / "runs" / run_id / "journal.jsonl")
    servers = [e["resource"] for e in events if e["event"] == "resource_registered"]
    servers = [r for r in servers if r["kind"] == SERVER_KIND]
    started = [ProcessIdentity.from_attrs(r["attrs"]) for r in servers]
    assert servers and any(started), "the journal recorded no started server: nothing would be checked"
    left = [f"pid {p.pid}" for p in started if p is not None and identity_of(p.pid) == p]
    datadirs = {r["attrs"]["datadir"].encode() for r in servers}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if any(d in cmdline for d in datadirs):
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                left.append(f"pid {proc.name}: {shown}")
    return left


def test_verify_accepts_the_evidence_and_rejects_any_flipped_byte(demo: dict[str, Any], tmp_path: Path) -> None:
    ok = drill("verify", demo["evidence"], "--key", demo["public_key"])
    assert ok.returncode == 0, ok.stderr
    assert "passed" in ok.stdout
    data = Path(demo["evidence"]).read_bytes()
    for pos in (0, len(data) // 3, len(data) // 2, len(data) - 2):
        bad = tmp_path / f"bad{pos}.json"
        bad.write_bytes(data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :])
        res = drill("verify", str(bad), "--key", demo["public_key"])
        assert res.returncode != 0, pos
        assert "Error" in res.stderr


def test_verify_with_another_key_fails(demo: dict[str, Any], tmp_path: Path) -> None:
    assert drill("keygen", "--out", str(tmp_path / "other.key")).returncode == 0
    res = drill("verify", demo["evidence"], "--key", str(tmp_path / "other.pub"))
    assert res.returncode == 1
    assert "VerificationError" in res.stderr


def test_run_json_prints_one_object_with_the_contract_fields(demo: dict[str, Any]) -> None:
    runbook = Path(demo["workdir"]) / "runbook.yaml"
    res = drill("--log-format", "json", "run", str(runbook), "--json", env=demo["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert {"run_id", "verdict", "rto_seconds", "rpo_seconds", "evidence", "findings"} <= out.keys()
    assert out["verdict"] == "passed"
    for line in res.stderr.strip().splitlines():  # every log line is JSON
        json.loads(line)
    runs = drill("runs", "--json", env=demo["env"])
    listed = {r["run_id"]: r for r in json.loads(runs.stdout)}
    assert listed[out["run_id"]]["status"] == "finished" and listed[out["run_id"]]["outstanding"] == []


def test_a_failed_drill_exits_1_and_still_writes_evidence(demo: dict[str, Any], tmp_path: Path) -> None:
    runbook = Path(demo["workdir"]) / "runbook.yaml"
    strict = runbook.parent / "strict.yaml"
    strict.write_text(
        runbook.read_text()
        .replace("rto_seconds: 60", "rto_seconds: 60, rpo_seconds: 0")
        .replace(
            "objectives: {rto_seconds: 60, rpo_seconds: 0, rpo_seconds: 5}",
            "objectives: {rto_seconds: 60, rpo_seconds: 0}",
        )
    )
    text = strict.read_text().replace("expect: 0", "expect: 1")  # a smoke query that cannot pass
    strict.write_text(text)
    res = drill("run", str(strict), "--json", env=demo["env"])
    assert res.returncode == 1, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["verdict"] == "failed"
    assert any(not f["passed"] and f["check"] == "no order committed after the target" for f in out["findings"])
    assert Path(out["evidence"]).exists()
    assert drill("verify", out["evidence"], "--key", demo["public_key"]).returncode == 0


def test_help_and_bad_input() -> None:
    assert drill("--help").returncode == 0
    res = drill("run", "/nonexistent/runbook.yaml")
    assert res.returncode == 2
    assert "/nonexistent/runbook.yaml" in res.stderr
    res = drill("teardown", "no-such-run", env={"RESTORE_DRILLS_HOME": "/nonexistent"})
    assert res.returncode == 2 and "drill runs" in res.stderr


def summary_of(stderr: str, verdict: str) -> list[str]:
    """The summary block `drill run` prints after its log lines: from `drill RUN_ID: VERDICT` to the end."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(rf"drill \S+: {verdict}", line))
    return lines[start:]


def signed(evidence: str, key: str) -> dict[str, Any]:
    from drills.evidence.keys import load_verifiers
    from drills.evidence.store import read_and_verify

    predicate: dict[str, Any] = read_and_verify(Path(evidence), load_verifiers(Path(key)))["predicate"]
    return predicate


def test_run_prints_a_summary_that_agrees_with_the_signed_evidence(demo: dict[str, Any]) -> None:
    runbook = Path(demo["workdir"]) / "runbook.yaml"
    res = drill("run", str(runbook), env=demo["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == ""  # the summary is for the person at the terminal; stdout stays clean for --json
    lines = [line for line in summary_of(res.stderr, "PASSED") if "% against the median" not in line]
    evidence = lines[-1].removeprefix("  evidence: ")
    p = signed(evidence, demo["public_key"])
    results = p["results"]
    assert lines[0] == f"drill {p['drill']['id']}: PASSED"
    rto = re.fullmatch(r"  RTO achieved (\d+\.\d\d)s \(objective 60s, met\)", lines[1])
    assert rto and float(rto[1]) == pytest.approx(results["achieved_rto_ms"] / 1000, abs=0.005 + 1e-9), lines[1]
    phases = dict(re.findall(r"(\w+) (\d+\.\d\d)s", lines[2]))
    assert list(phases) == ["restore", "await_ready", "connect", "validate"]
    for name, shown in phases.items():
        assert float(shown) == pytest.approx(results["rto_phases_ms"][name] / 1000, abs=0.005 + 1e-9), name
    rpo = re.fullmatch(r"  RPO achieved (\d+\.\d\d\d)s \(objective 5s, met\)", lines[3])
    assert rpo and float(rpo[1]) == pytest.approx(results["achieved_rpo_ms"] / 1000, abs=0.0005 + 1e-9), lines[3]
    n = len(p["validation"]["findings"])
    assert n >= 10 and lines[4:] == [f"  findings: {n} passed, 0 failed", f"  evidence: {evidence}"]


def test_a_failed_run_prints_the_check_that_failed_and_why(demo: dict[str, Any]) -> None:
    runbook = Path(demo["workdir"]) / "runbook.yaml"
    broken = runbook.parent / "broken.yaml"
    broken.write_text(runbook.read_text().replace("expect: 0", "expect: 1"))  # a smoke check that cannot pass
    res = drill("run", str(broken), env=demo["env"])
    assert res.returncode == 1, res.stderr[-2000:]
    lines = [line for line in summary_of(res.stderr, "FAILED") if "% against the median" not in line]
    evidence = lines[-1].removeprefix("  evidence: ")
    p = signed(evidence, demo["public_key"])
    assert p["results"]["verdict"] == "failed"
    assert lines[0] == f"drill {p['drill']['id']}: FAILED"
    assert lines[1] == "  RTO achieved not reached (objective 60s)"  # the RTO ends at a validation that passed
    rpo = re.fullmatch(r"  RPO achieved (\d+\.\d\d\d)s \(objective 5s, met\)", lines[3])
    assert rpo and float(rpo[1]) == pytest.approx(p["results"]["achieved_rpo_ms"] / 1000, abs=0.0005 + 1e-9), lines[3]
    n = len(p["validation"]["findings"])
    assert lines[4:] == [
        f"  findings: {n - 1} passed, 1 failed",
        "    ✗ smoke: no order committed after the target: expected '== 1', got 0",
        "  failed because:",
        "    - validator: 1 check(s) failed: smoke: no order committed after the target",
        f"  evidence: {evidence}",
    ]
