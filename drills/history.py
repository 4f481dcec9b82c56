"""History over evidence: the chain link to the previous drill of a runbook and
the RTO trend that flags regressions as databases grow.

History is a view over the evidence directory, not a database of its own: each
envelope names its predecessor (``chain.prev_envelope_sha256``) and carries a
sequence number, so an auditor can detect an edited, removed or reordered
record by walking the chain; ``regression`` compares the achieved RTO with the
median of the runbook's recent passed drills.
"""

from __future__ import annotations

import base64
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PastDrill", "chain_link", "past_drills", "regression"]

REGRESSION_WINDOW = 5  # recent passed drills the RTO is compared with
REGRESSION_THRESHOLD_PCT = 20  # slower than the recent median by more than this is flagged


@dataclass(frozen=True)
class PastDrill:
    run_id: str
    finished_at: str
    verdict: str
    achieved_rto_ms: int | None
    seq: int
    envelope_sha256: str


def _read(path: Path) -> tuple[str, PastDrill] | None:
    """(runbook name, facts) of one evidence file; unreadable files are skipped (`drill verify` judges them)."""
    try:
        raw = path.read_bytes()
        predicate = json.loads(base64.b64decode(json.loads(raw)["payload"]))["predicate"]
        past = PastDrill(
            run_id=str(predicate["drill"]["id"]),
            finished_at=str(predicate["drill"].get("finished_at") or ""),
            verdict=str(predicate["results"]["verdict"]),
            achieved_rto_ms=predicate["results"].get("achieved_rto_ms"),
            seq=int((predicate.get("chain") or {}).get("seq", 0)),
            envelope_sha256=hashlib.sha256(raw).hexdigest(),
        )
        return str(predicate["runbook"]["name"]), past
    except (OSError, ValueError, KeyError, TypeError):
        return None


def past_drills(evidence_dir: Path, runbook_name: str) -> list[PastDrill]:
    """Earlier drills of this runbook found in the evidence directory, oldest first."""
    if not evidence_dir.is_dir():
        return []
    found = [r[1] for r in map(_read, evidence_dir.glob("*.evidence.json")) if r is not None and r[0] == runbook_name]
    return sorted(found, key=lambda p: (p.seq, p.finished_at, p.run_id))


def chain_link(past: list[PastDrill], runbook_name: str) -> dict[str, Any]:
    """``previous_drill`` and ``chain`` fields for the next record."""
    prev = past[-1] if past else None
    return {
        "previous_drill": (
            {"id": prev.run_id, "at": prev.finished_at, "envelope_sha256": prev.envelope_sha256} if prev else None
        ),
        "chain": {
            "id": f"runbook:{runbook_name}",
            "seq": (prev.seq + 1) if prev else 1,
            "prev_envelope_sha256": prev.envelope_sha256 if prev else None,
        },
    }


def regression(past: list[PastDrill], achieved_rto_ms: int | None) -> dict[str, Any] | None:
    """Achieved RTO against the median of the last passed drills; None without history or RTO."""
    recent = [p.achieved_rto_ms for p in past if p.verdict == "passed" and p.achieved_rto_ms][-REGRESSION_WINDOW:]
    if not recent or achieved_rto_ms is None:
        return None
    baseline = int(statistics.median(recent))
    delta_pct = round((achieved_rto_ms - baseline) * 100 / baseline) if baseline else 0
    return {
        "baseline_rto_ms": baseline,
        "baseline_drills": len(recent),
        "delta_pct": delta_pct,
        "flag": delta_pct > REGRESSION_THRESHOLD_PCT,
        "rule": f"slower than the median of the last {REGRESSION_WINDOW} passed drills by more than "
        f"{REGRESSION_THRESHOLD_PCT} %",
    }
