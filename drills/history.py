"""History over evidence: the chain link to the previous drill of a runbook and
the RTO trend that flags regressions as databases grow.

History is a view over the evidence directory, not a database of its own: each
envelope names its predecessor (``chain.prev_envelope_sha256``) and carries a
sequence number, so an auditor can detect an edited, removed or reordered
record by walking the chain; ``regression`` compares the achieved RTO with the
runbook's history with the robust statistics of :mod:`drills.trend`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.trend import Point, regression_record, restored_bytes

__all__ = ["PastDrill", "chain_link", "past_drills", "regression"]


@dataclass(frozen=True)
class PastDrill:
    run_id: str
    finished_at: str
    verdict: str
    achieved_rto_ms: int | None
    seq: int
    envelope_sha256: str
    restored_bytes: int | None = None  # drills.trend.restored_bytes of the record


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
            restored_bytes=restored_bytes(predicate),
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


def _when(text: str | None) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def regression(
    past: list[PastDrill], achieved_rto_ms: int | None, predicate: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The current RTO against the runbook's history (:mod:`drills.trend`); None without a measured RTO
    or without an earlier passed drill.

    ``predicate`` is the current record: its finish time, verdict, objective and restored size feed
    the trend and the projection (without it, only the baseline is meaningful).
    """
    if achieved_rto_ms is None:
        return None
    points = [
        Point(at, p.achieved_rto_ms, p.restored_bytes, p.verdict == "passed")
        for p in past
        if isinstance(p.achieved_rto_ms, int)  # an odd old record must not stop this one's evidence
        and not isinstance(p.achieved_rto_ms, bool)
        and (at := _when(p.finished_at)) is not None
    ]
    pred = predicate or {}
    results = pred.get("results") or {}
    at = _when((pred.get("drill") or {}).get("finished_at")) or datetime.now(UTC)
    current = Point(at, achieved_rto_ms, restored_bytes(pred), results.get("verdict") == "passed")
    return regression_record(points, current, results.get("rto_objective_ms"))
