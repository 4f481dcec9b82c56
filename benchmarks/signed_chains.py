"""Signed record chains for the evidence benchmarks: one linear chain per runbook, a real record's size.

``bench_chain_append.py`` and ``bench_history_s3.py`` measure the same kind of directory, so they
build it the same way, with the real ``write_evidence``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.evidence import write_evidence  # noqa: E402
from drills.evidence.keys import SigningKey  # noqa: E402
from drills.evidence.statement import subject_for_bytes  # noqa: E402

SUBJECTS = [subject_for_bytes("runbook", b"name: x\n")]
FINDINGS = [
    {
        "validator": "row_counts",
        "check": f"table_{i} rows",
        "passed": True,
        "expected": ">= 1000",
        "actual": 1200 + i,
        "detail": "counted with count(*) under a read-only role",
        "duration_ms": 12,
    }
    for i in range(25)
]  # fmt: skip  (a real record's size, ~6 KB)


def predicate(runbook: str, n: int, prev: str | None) -> dict[str, Any]:
    """Record ``n`` of ``runbook``'s chain, linked to the envelope digest ``prev`` (the smallest the model takes)."""
    at = f"2026-{1 + n // 28 % 12:02d}-{1 + n % 28:02d}T02:00:00.000Z"
    return {
        "drill": {"id": f"{runbook}-{n:05d}", "started_at": at, "finished_at": at},
        "runbook": {"name": runbook},
        "results": {"verdict": "passed", "achieved_rto_ms": 600_000 + n, "rto_objective_ms": 1_800_000},
        "chain": {"id": f"runbook:{runbook}", "seq": n, "prev_envelope_sha256": prev},
    }


def sign_chains(out: Path, signer: SigningKey, runbooks: int, per_runbook: int) -> Iterator[tuple[str, str, Path]]:
    """Write ``runbooks`` chains of ``per_runbook`` records into ``out``; yield (runbook, run id, path) as written."""
    for r in range(runbooks):
        prev = None
        name = f"rb{r:03d}"
        for n in range(1, per_runbook + 1):
            run_id = f"{name}-{n:05d}"
            path = write_evidence(predicate(name, n, prev) | {"findings": FINDINGS}, SUBJECTS, out, run_id, signer)
            prev = hashlib.sha256(path.read_bytes()).hexdigest()
            yield name, run_id, path
