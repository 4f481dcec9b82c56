"""`drill doctor` as cron runs it: real runbook files, signed records, exit code and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drills.evidence.keys import generate_keypair, load_signer
from drills.evidence.store import write_evidence


def record(ev: Path, key: Path, run_id: str, runbook: str, finished: datetime, verdict: str, rto_ms: int) -> None:
    pred: dict[str, Any] = {
        "drill": {"id": run_id, "finished_at": finished.isoformat().replace("+00:00", "Z")},
        "runbook": {"name": runbook, "sha256": "ab" * 32, "path": f"{runbook}.yaml"},
        "results": {"verdict": verdict, "achieved_rto_ms": rto_ms, "rto_objective_ms": 600_000},
    }
    subject = [{"name": f"{runbook}.yaml", "digest": {"sha256": "ab" * 32}}]
    write_evidence(pred, subject, ev, run_id, load_signer(key))


def doctor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "RESTORE_DRILLS_HOME": str(home)},
    )


def test_doctor_exits_0_when_all_is_well_and_1_naming_what_needs_a_human(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "drill.key")
    books = tmp_path / "runbooks"
    books.mkdir()
    for name in ("orders", "billing"):
        (books / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                name: {name}
                source: {{kind: postgres-dump, archive: /nonexistent.pgc}}
                objectives: {{rto_seconds: 600}}
                schedule: {{every: 7d}}
                evidence: {{dir: ../evidence, signing_key: ../drill.key}}
                """
            )
        )
    ev, key, now = tmp_path / "evidence", tmp_path / "drill.key", datetime.now(UTC)
    record(ev, key, "orders-1", "orders", now - timedelta(days=2), "passed", 300_000)
    record(ev, key, "billing-1", "billing", now - timedelta(days=3), "passed", 200_000)
    home = tmp_path / "home"

    ok = doctor(str(books), home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 runbook(s), 0 run(s): ok" in ok.stdout

    record(ev, key, "billing-2", "billing", now - timedelta(hours=5), "failed", 590_000)
    record(ev, key, "orders-2", "orders", now - timedelta(hours=1), "passed", 540_000)  # 90 % of the objective
    other = tmp_path / "other.key"
    generate_keypair(other)
    record(ev, other, "planted", "orders", now, "passed", 1)
    res = doctor(str(books), "--json", home=home)
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    found = {(f["check"], f["subject"]) for f in out["findings"]}
    assert found == {
        ("failing", "billing"),
        ("rto_near_objective", "orders"),
        ("unverified_evidence", "orders"),
        ("unverified_evidence", "billing"),
    }
    assert doctor(str(tmp_path / "missing.yaml"), home=home).returncode == 2
