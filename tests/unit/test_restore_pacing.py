"""The runner's choice of poll policy for an AWS restore: from trusted records of this runbook only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drills.api import _restore_pacing
from drills.evidence import generate_keypair, load_signer, subject_for_bytes, write_evidence
from drills.evidence.keys import verifier_for_signer
from drills.forecast_poll import ForecastPollPolicy

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def _write(out: Path, signer: Any, run_id: str, runbook: str, took_s: float, ready: str = "instance-available") -> None:
    at = T0 + timedelta(days=int(run_id.rsplit("-", 1)[-1]))
    predicate = {
        "drill": {"id": run_id, "finished_at": (at + timedelta(hours=3)).isoformat()},
        "runbook": {"name": runbook},
        "results": {"verdict": "passed"},
        "marks": [
            {"name": "restore-requested", "at": at.isoformat(), "source": "runner-clock", "precision_ms": 5},
            {"name": ready, "at": (at + timedelta(seconds=took_s)).isoformat(), "source": "runner-clock",
             "precision_ms": 9000},
        ],
    }  # fmt: skip
    write_evidence(predicate, [subject_for_bytes("rb", b"x")], out, run_id, signer)


def _keys(tmp: Path) -> tuple[Any, Any]:
    generate_keypair(tmp / "own.key")
    generate_keypair(tmp / "other.key")
    return load_signer(tmp / "own.key"), load_signer(tmp / "other.key")


def test_three_trusted_drills_make_a_forecast_from_their_marks(tmp_path: Path) -> None:
    own, _ = _keys(tmp_path)
    out = tmp_path / "evidence"
    for i, took in enumerate((7100, 7300, 7200), start=1):
        _write(out, own, f"run-{i}", "orders", took)
    policy, doc = _restore_pacing("rds", out, "orders", [verifier_for_signer(own)])
    assert isinstance(policy, ForecastPollPolicy) and policy.forecast is not None
    assert policy.forecast.expected_s == 7200
    assert doc["policy"] == "forecast" and doc["history_drills"] == 3
    assert doc["forecast"]["expected_ms"] == 7_200_000
    # Aurora waits for its cluster: the instance marks of an RDS history are not its history
    policy, doc = _restore_pacing("aurora", out, "orders", [verifier_for_signer(own)])
    assert policy is None and doc == {"policy": "plain", "history_drills": 0, "forecast": None}


def test_planted_records_and_other_runbooks_do_not_steer_the_wait(tmp_path: Path) -> None:
    own, other = _keys(tmp_path)
    out = tmp_path / "evidence"
    _write(out, own, "run-1", "orders", 7200)
    _write(out, own, "run-2", "orders", 7250)
    for i in range(3, 9):  # signed by a key the runbook does not trust: not history
        _write(out, other, f"run-{i}", "orders", 60)
    for i in range(9, 13):  # trusted, but another runbook's
        _write(out, own, f"run-{i}", "billing", 60)
    policy, doc = _restore_pacing("rds", out, "orders", [verifier_for_signer(own)])
    assert policy is None  # two measured drills: the plain policy, as without history
    assert doc == {"policy": "plain", "history_drills": 2, "forecast": None}


def test_local_kinds_are_not_paced_and_record_nothing(tmp_path: Path) -> None:
    own, _ = _keys(tmp_path)
    assert _restore_pacing("postgres", tmp_path, "orders", [verifier_for_signer(own)]) == (None, None)
