"""The summary a user reads after `drill run` (without --json): the exact lines, for a passed and a failed drill.

Each drill really runs (``run_drill``, the machine, evidence) on a fake clock, with the recorder backend and
stand-ins for the two database-facing seams (the connect probe and the validator runner), so every number on
the screen is one the test chose: a 42 s restore, 1.5 s of validation.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from recorder import Recorder

from drills import api
from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings
from drills.clock import FakeClock
from drills.evidence.keys import generate_keypair
from drills.machine import Drill
from drills.render import summary_lines as _summary_lines
from drills.runbook import load_runbook
from validators.base import Finding, ValidationReport
from validators.endpoint import Endpoint

RUNBOOK = textwrap.dedent(
    """\
    name: summary
    source: {kind: postgres-dump, archive: dump.pgc}
    objectives: {rto_seconds: 60}
    evidence: {dir: evidence, signing_key: drill.key}
    """
)


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    (tmp_path / "dump.pgc").write_bytes(b"x")
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    return tmp_path / "rb.yaml"


def drill(runbook: Path, monkeypatch: pytest.MonkeyPatch, *, restore_s: float, findings: list[Finding]) -> RunResult:
    clock = FakeClock()

    def probe(_ep: Endpoint) -> str:
        return "16.4"

    def validate(_d: Drill) -> ValidationReport:
        clock.sleep(1.5)
        return ValidationReport(tuple(findings), None, None, 1500)

    monkeypatch.setattr(api, "_probe", probe)
    monkeypatch.setattr(api, "_validate", validate)

    def factory(_source: object, _settings: BackendSettings) -> Recorder:
        return Recorder(restore_takes_s=restore_s)

    return run_drill(load_runbook(runbook), RunOptions(clock=clock, backend_factory=factory))


OK = [
    Finding("session", "validators' role is read-only", passed=True, expected="read only", actual="read only"),
    Finding("row_counts", "orders rows", passed=True, expected=">= 1000", actual=1200),
]


def test_a_passed_drill(runbook: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = drill(runbook, monkeypatch, restore_s=42, findings=OK)
    assert res.verdict == "passed" and res.evidence is not None
    assert _summary_lines(res) == [
        "",
        f"drill {res.run_id}: PASSED",
        "  RTO achieved 43.50s (objective 60s, met)",
        "    restore 0.00s  await_ready 42.00s  connect 0.00s  validate 1.50s",
        "  RPO achieved not measured",
        "  findings: 2 passed, 0 failed",
        f"  evidence: {res.evidence}",
    ]


def test_a_drill_that_missed_its_rto_says_so_and_flags_the_regression(
    runbook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = drill(runbook, monkeypatch, restore_s=42, findings=OK)  # the runbook's earlier, passed drill
    res = drill(runbook, monkeypatch, restore_s=90, findings=OK)
    assert (first.verdict, res.verdict, res.exit_code) == ("passed", "failed", 1)
    assert _summary_lines(res) == [
        "",
        f"drill {res.run_id}: FAILED",
        "  RTO achieved 91.50s (objective 60s, MISSED)",
        "    restore 0.00s  await_ready 90.00s  connect 0.00s  validate 1.50s",
        "  RPO achieved not measured",
        "  REGRESSION: RTO +110 % against the median of the last 1 passed drills (43.50s)",
        "  findings: 2 passed, 0 failed",
        "  failed because:",
        "    - RTO objective missed: 91.500s > 60s",
        f"  evidence: {res.evidence}",
    ]


def test_a_failed_check_is_shown_with_what_was_expected_and_found(
    runbook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = Finding("smoke", "nothing after target", passed=False, expected=0, actual=3)
    res = drill(runbook, monkeypatch, restore_s=42, findings=[*OK, lost])
    assert (res.verdict, res.exit_code) == ("failed", 1)
    assert _summary_lines(res) == [
        "",
        f"drill {res.run_id}: FAILED",
        "  RTO achieved not reached (objective 60s)",  # the RTO ends at a validation that passed
        "    restore 0.00s  await_ready 42.00s  connect 0.00s  validate 1.50s",
        "  RPO achieved not measured",
        "  findings: 2 passed, 1 failed",
        "    ✗ smoke: nothing after target: expected 0, got 3",
        "  failed because:",
        "    - validator: 1 check(s) failed: smoke: nothing after target",
        f"  evidence: {res.evidence}",
    ]


def test_a_drill_that_never_reached_validation(runbook: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_probe", lambda _ep: "16.4")

    def factory(_source: object, _settings: BackendSettings) -> Recorder:
        return Recorder(fail_in="await_ready", restore_takes_s=5)

    res = run_drill(load_runbook(runbook), RunOptions(clock=FakeClock(), backend_factory=factory))
    assert (res.verdict, res.exit_code) == ("failed", 3)
    assert _summary_lines(res) == [
        "",
        f"drill {res.run_id}: FAILED",
        "  RTO achieved not reached (objective 60s)",
        "    no phase completed",
        "  RPO achieved not measured",
        "  findings: 0 passed, 0 failed",
        "  failed because:",
        "    - await_ready failed: RestoreFailed: injected",
        f"  evidence: {res.evidence}",
    ]
