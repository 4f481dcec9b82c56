"""`drill report` as an auditor reads it: phases in run order, durations as people write them,
values as recorded (not Python reprs), the target time to the microsecond."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from recorder import Recorder

from drills.api import RunOptions, run_drill
from drills.backends.base import BackendSettings
from drills.clock import FakeClock
from drills.evidence.keys import generate_keypair, load_verifiers
from drills.evidence.store import read_and_verify
from drills.report import human_ms, render_markdown
from drills.runbook import load_runbook

STATEMENT: dict[str, Any] = {
    "predicate": {
        "drill": {"id": "run-1", "started_at": "2026-11-26T12:00:00.000Z", "host": "h", "trigger": "manual"},
        "runbook": {"name": "orders", "sha256": "ab" * 32},
        "recovery_point": {"kind": "pitr", "target_time": "2026-11-26T12:00:00.123456Z"},
        "results": {
            "verdict": "failed",
            "reasons": ["validator: 2 check(s) failed: row_counts: orders; smoke: flag"],
            "achieved_rto_ms": 61_250,
            "rto_objective_ms": 120_000,
            "rto_met": True,
            "achieved_rpo_ms": 4_000,
            "rpo_objective_ms": 3_600_000,
            "rpo_met": True,
            # the signed JSON has its keys sorted: alphabetical, not the order the drill ran
            "rto_phases_ms": {"await_ready": 20_000, "connect": 250, "restore": 40_000, "validate": 1_000},
        },
        "timeline": [
            {"state": s, "attempt": 1, "duration_ms": 5}
            for s in ("preflight", "restore", "await_ready", "connect", "validate", "measure")
        ],
        "validation": {
            "passed": False,
            "findings": [
                {"validator": "row_counts", "check": "orders", "expected": {"min": 1000}, "actual": 998}
                | {"passed": False},
                {"validator": "smoke", "check": "flag", "expected": True, "actual": None, "passed": False},
                {"validator": "schema", "check": "columns", "expected": ["id", "total"], "actual": "id"}
                | {"passed": True},
            ],
        },
        "teardown": {"resources": [], "all_deleted": True, "kept_until_expiry": False},
        "evidence_trail": {"deviations": [{"kind": "untrusted", "file": "x", "message": "x is signed by sha256:ee"}]},
    }
}


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (120_000, "2m"),
        (3_600_000, "1h"),
        (5_400_000, "1h 30m"),
        (723_456, "12m 3.456s"),
        (120_001, "2m 0.001s"),
        (1_410, "1.41s"),
        (250, "0.25s"),
        (0, "0s"),
        (2 * 86_400_000 + 1000, "2d 1s"),
        (-1_500, "-1.5s"),
        (None, "—"),
    ],
)
def test_durations_read_as_people_write_them(ms: int | None, text: str) -> None:
    assert human_ms(ms) == text


def test_report_shows_phases_in_run_order_objectives_values_and_target_as_recorded() -> None:
    text = render_markdown(STATEMENT, evidence_name="run-1.evidence.json")
    assert "Phases (in run order): restore 40s, await_ready 20s, connect 0.25s, validate 1s." in text
    assert "| RTO | 1m 1.25s | 2m | yes |" in text
    assert "| RPO | 4s | 1h | yes |" in text
    assert '| row_counts | orders | {"min": 1000} | 998 | no |' in text
    assert "| smoke | flag | true | — | no |" in text
    assert '| schema | columns | ["id", "total"] | id | yes |' in text
    assert "target 2026-11-26T12:00:00.123456Z" in text
    assert "- untrusted: x is signed by sha256:ee" in text
    assert "- validator: 2 check(s) failed: row_counts: orders; smoke: flag" in text
    assert "{'min'" not in text and "True" not in text and "None" not in text and "0.000s" not in text


def test_the_record_keeps_the_target_time_to_the_microsecond(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(
        textwrap.dedent(
            """\
            name: micro
            source:
              kind: postgres-pitr
              base_backup: base
              wal_archive: wal
              target_time: 2026-11-26T12:00:00.123456Z
            objectives: {rto_seconds: 60}
            evidence: {dir: evidence, signing_key: drill.key}
            """
        )
    )

    def factory(_source: Any, _settings: BackendSettings) -> Recorder:
        return Recorder()

    res = run_drill(load_runbook(tmp_path / "rb.yaml"), RunOptions(clock=FakeClock(), backend_factory=factory))
    assert res.evidence is not None
    predicate = read_and_verify(res.evidence, load_verifiers(tmp_path / "drill.pub"))["predicate"]
    assert predicate["recovery_point"]["target_time"] == "2026-11-26T12:00:00.123456Z"
    report = render_markdown({"predicate": predicate}, evidence_name=res.evidence.name)
    assert "target 2026-11-26T12:00:00.123456Z" in report


def test_a_record_that_does_not_fit_its_schema_is_refused_naming_the_field() -> None:
    """The report reads the typed record: a verified record whose verdict is not one of the three is no report."""
    import copy

    from drills.errors import EvidenceError

    odd = copy.deepcopy(STATEMENT)
    odd["predicate"]["results"]["verdict"] = "mostly"
    with pytest.raises(EvidenceError, match=r"results\.verdict"):
        render_markdown(odd, evidence_name="run-1.evidence.json")


def test_the_report_of_a_real_drill_shows_its_timeline_isolation_and_chain(tmp_path: Path) -> None:
    """A record written by the drill itself, read through the model: the sections the model types are shown."""
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "dump.pgc").write_bytes(b"x")
    (tmp_path / "rb.yaml").write_text(
        "name: typed\nsource: {kind: postgres-dump, archive: dump.pgc}\nobjectives: {rto_seconds: 60}\n"
        "evidence: {dir: evidence, signing_key: drill.key}\n"
    )
    res = run_drill(
        load_runbook(tmp_path / "rb.yaml"),
        RunOptions(clock=FakeClock(), backend_factory=lambda _s, _st: Recorder(fail_in="connect")),
    )
    assert res.evidence is not None
    statement = read_and_verify(res.evidence, load_verifiers(tmp_path / "drill.pub"))
    text = render_markdown(statement, evidence_name=res.evidence.name)
    assert text.startswith(f"# Restore drill {res.run_id}: FAILED")
    assert "| connect | 1 |" in text and "| error |" in text  # the failed state's attempt, with its outcome
    assert "Chain `runbook:typed` record 1; previous envelope sha256 `—`." in text
    assert "restore request until all validators passed" in text  # results.rto_definition
    assert f"restore-drills {statement['predicate']['drill']['executor']['version']}" in text
