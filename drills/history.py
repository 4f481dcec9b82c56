"""History over evidence: the chain link to the previous drill of a runbook and
the RTO trend that flags regressions as databases grow.

History is a view over the evidence directory, not a database of its own: each
envelope names its predecessor (``chain.prev_envelope_sha256``) and carries a
sequence number, so an auditor can detect an edited, removed or reordered
record by walking the chain (:mod:`drills.evidence.chain`); ``regression``
compares the achieved RTO with the runbook's history with the robust statistics
of :mod:`drills.trend`. Only records that verify against the trusted keys are
history: a record planted by someone without the key is reported in the next
record, never linked to or compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from drills.errors import EvidenceError, PreflightError
from drills.evidence.chain import Record, chain_lock, check_chain, next_link, read_head, scan, write_head
from drills.evidence.keys import SigningKey, VerifyingKey, load_verifiers, verifier_for_signer
from drills.evidence.store import evidence_path, write_evidence
from drills.record_model import DrillRecord
from drills.trend import Point, regression_record, restored_bytes

__all__ = [
    "PastDrill",
    "append_drill",
    "chain_link",
    "past_drill",
    "past_drills",
    "regression",
    "trusted_verifiers",
]


@dataclass(frozen=True)
class PastDrill:
    run_id: str
    finished_at: str
    verdict: str
    achieved_rto_ms: int | None
    seq: int
    envelope_sha256: str
    restored_bytes: int | None = None  # drills.trend.restored_bytes of the record


def past_drill(record: Record) -> PastDrill:
    """The facts of one trusted record that history and regression use."""
    results = record.predicate.get("results") or {}
    rto = results.get("achieved_rto_ms")
    return PastDrill(
        run_id=record.run_id,
        finished_at=record.finished_at,
        verdict=str(results.get("verdict")),
        achieved_rto_ms=rto if isinstance(rto, int) and not isinstance(rto, bool) else None,
        seq=record.seq or 0,
        envelope_sha256=record.sha256,
        restored_bytes=restored_bytes(record.predicate),
    )


def past_drills(evidence_dir: Path, runbook_name: str, verifiers: Sequence[VerifyingKey]) -> list[PastDrill]:
    """Earlier drills of this runbook, oldest first: only records that verify against ``verifiers``
    and are named after their run (anything else is a deviation, see :func:`append_drill`)."""
    return [past_drill(r) for r in scan(evidence_dir, verifiers, runbook=runbook_name).of(runbook_name)]


def chain_link(past: list[PastDrill], runbook_name: str) -> dict[str, Any]:
    """``previous_drill`` and ``chain`` fields for the next record after ``past`` (no chain head known)."""
    prev = past[-1] if past else None
    return {
        "previous_drill": (
            {"id": prev.run_id, "at": prev.finished_at, "envelope_sha256": prev.envelope_sha256} if prev else None
        ),
        "chain": {
            "id": f"runbook:{runbook_name}",
            "seq": (prev.seq + 1) if prev else 1,
            "prev_envelope_sha256": prev.envelope_sha256 if prev else None,
            "prev_head_sha256": None,
        },
    }


def trusted_verifiers(signer: object, trusted_keys: Path | None) -> list[VerifyingKey]:
    """The keys whose records count as history: the drill's own signing key, plus the runbook's
    ``evidence.trusted_keys`` (a PEM public key or a keyring, e.g. after a key rotation)."""
    verifiers: list[VerifyingKey] = []
    own = verifier_for_signer(signer)
    if own is not None:
        verifiers.append(own)
    if trusted_keys is not None:
        try:
            verifiers += load_verifiers(trusted_keys)
        except EvidenceError as exc:
            raise PreflightError(f"evidence.trusted_keys: {exc.message}", hint=exc.hint) from None
    return verifiers


def append_drill(
    out_dir: Path,
    runbook_name: str,
    verifiers: Sequence[VerifyingKey],
    signer: SigningKey,
    complete: Callable[[list[PastDrill], dict[str, Any]], dict[str, Any]],
    *,
    run_id: str,
    subjects: list[dict[str, Any]],
    secrets: Sequence[str] = (),
) -> Path:
    """Append one record to the runbook's chain, under the directory's lock, and sign the new head.

    ``complete(past, trail)`` gets the trusted history and the ``chain``, ``previous_drill`` and
    ``evidence_trail`` fields, and returns the predicate to sign (it computes the regression).
    ``evidence_trail.deviations`` lists every file that claims this runbook but is not a trusted
    record, and every break in the chain, as found at this append.
    """
    with chain_lock(out_dir):
        if evidence_path(out_dir, run_id).exists():  # checked under the lock: two writers of one run id
            raise EvidenceError(f"{evidence_path(out_dir, run_id)} already exists; refusing to replace signed evidence")
        found = scan(out_dir, verifiers, runbook=runbook_name)
        records = found.of(runbook_name)
        head = read_head(out_dir, runbook_name, verifiers)
        problems, _notes = check_chain(records, head)
        deviations = found.rejected_for(runbook_name) + problems
        trail = next_link(records, head, runbook_name) | {
            "evidence_trail": {
                "trusted_keyids": sorted({v.keyid for v in verifiers}),
                "verified_records": len(records),
                "deviations": [p.to_dict() for p in deviations],
            }
        }
        predicate = complete([past_drill(r) for r in records], trail)
        DrillRecord.parse(predicate)  # a record that drifted from docs/record.schema.json fails loudly, unsigned
        path = write_evidence(predicate, subjects, out_dir, run_id, signer, secrets=secrets)
        finished = str((predicate.get("drill") or {}).get("finished_at") or "")
        try:
            write_head(out_dir, runbook_name, path, trail["chain"]["seq"], signer, at=finished)
        except (EvidenceError, OSError) as exc:  # the record stands; the next append names the stale head
            structlog.get_logger("drills.history").error("chain_head_failed", path=str(path), error=str(exc))
    return path


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
