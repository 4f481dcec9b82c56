"""The drill record (the evidence predicate), built from what the run observed.

Pure: takes the finished :class:`~drills.machine.Drill` and facts about the
host, returns a JSON-able dict with integers only (RFC 8785 and floats do not
mix: durations are milliseconds; any float a validator reported becomes a
string).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from drills.clock import iso
from drills.errors import BackupDefect, IncompleteRecovery, Interrupted, TeardownError
from drills.machine import Drill
from drills.measure import RPO_METHODS

__all__ = ["SCHEMA_VERSION", "build_predicate", "failure_reasons", "jsonable", "latest_rpo_split", "verdict_of"]

SCHEMA_VERSION = 1


def jsonable(value: Any) -> Any:
    """Integers, strings, bools, None, lists and dicts only."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return str(value)


def verdict_of(d: Drill) -> str:
    if d.error is not None or d.validation is None or d.measurement is None:
        return "failed"
    m = d.measurement
    if not d.validation.passed or not m.rto_met or m.rpo_met is False:
        return "failed"
    return "passed"


def failure_reasons(d: Drill) -> list[str]:
    """Why the verdict is not ``passed``, one short line per cause, most fundamental first."""
    if verdict_of(d) == "passed":
        return []
    out = [r for r in (_error_reason(d), _validator_reason(d)) if r] + _objective_reasons(d)
    if d.teardown_errors and not isinstance(d.error, TeardownError):
        out.append(f"teardown incomplete: {len(d.teardown_errors)} resource(s)")
    return out or ["the drill did not reach validation"]


def _error_reason(d: Drill) -> str | None:
    e = d.error
    if e is None:
        return None
    for cls, label in (
        (IncompleteRecovery, "incomplete recovery"),
        (BackupDefect, "backup defect"),
        (TeardownError, "teardown incomplete"),
        (Interrupted, "interrupted"),
    ):
        if isinstance(e, cls):
            return f"{label}: {e.message}"
    return f"{d.failed_state or 'run'} failed: {type(e).__name__}: {e.message}"


def _validator_reason(d: Drill) -> str | None:
    v = d.validation
    if v is None or v.passed:
        return None
    bad = [f"{f.validator}: {f.check}" for f in v.findings if not f.passed]
    return f"validator: {len(bad)} check(s) failed: " + "; ".join(bad[:3]) + (" …" if len(bad) > 3 else "")


def _objective_reasons(d: Drill) -> list[str]:
    m = d.measurement
    out: list[str] = []
    if m is not None and m.achieved_rto_ms is not None and not m.rto_met:
        out.append(f"RTO objective missed: {m.achieved_rto_ms / 1000:.3f}s > {m.rto_objective_ms / 1000:g}s")
    if m is not None and m.rpo_met is False:
        if m.achieved_rpo_ms is None:
            out.append("RPO objective set but not measured: configure validators.freshness")
        elif m.achieved_rpo_ms < 0:
            out.append(f"RPO: the restored data holds a commit {-m.achieved_rpo_ms / 1000:.3f}s after the target")
        else:
            out.append(f"RPO objective missed: {m.achieved_rpo_ms / 1000:.3f}s > {(m.rpo_objective_ms or 0) / 1000:g}s")
    return out


def _ms_between(later: str | None, earlier: str | None) -> int | None:
    if not later or not earlier:
        return None
    a = datetime.fromisoformat(later.replace("Z", "+00:00"))
    b = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
    return int((a - b).total_seconds() * 1000)


def latest_rpo_split(d: Drill) -> dict[str, int | None] | None:
    """For a ``latest`` restore: archive lag (request - last archived commit) and loss inside the archive.

    The loss (last archived commit - newest restored one) must be zero: anything else is an
    incomplete recovery. The RPO objective is held against their sum, the restore request minus the
    newest restored commit, which is what production would lose if it died at the request.
    """
    rp = d.preflight.recovery_point if d.preflight else None
    if not rp or rp.get("target_time") != "latest":
        return None
    proof = _proof(d) or {}
    last = rp.get("last_archived_commit")
    restored = proof.get("newest_replayed_transaction_at")
    requested = iso(d.restore_requested_at) if d.restore_requested_at else None
    return {"archive_lag_ms": _ms_between(requested, last), "loss_in_archive_ms": _ms_between(last, restored)}


def _proof(d: Drill) -> dict[str, Any] | None:
    return d.backend.recovery_proof()


def _recovery_point(d: Drill) -> dict[str, Any] | None:
    """The backend's recovery point, with the target time as the runbook gave it: recovery stops at that
    instant to the microsecond, so the record must not round it to the millisecond."""
    rp = d.preflight.recovery_point if d.preflight else None
    target = getattr(d.loaded.runbook.source, "target_time", None)
    if rp is None or not isinstance(target, datetime):
        return rp
    exact = target.astimezone(UTC).isoformat(timespec="milliseconds" if target.microsecond % 1000 == 0 else "auto")
    return {**rp, "target_time": exact.replace("+00:00", "Z")}


def deviations(d: Drill) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if d.error is not None:
        out.append({"kind": type(d.error).__name__, "state": d.failed_state, "message": str(d.error)})
    if d.validation is not None:
        out += [
            {"kind": "finding_failed", "check": f"{f.validator}: {f.check}", "message": f.detail}
            for f in d.validation.findings
            if not f.passed
        ]
    m = d.measurement
    if m is not None and not m.rto_met and m.achieved_rto_ms is not None:
        out.append({"kind": "rto_breach", "message": f"RTO {m.achieved_rto_ms} ms > objective {m.rto_objective_ms} ms"})
    if m is not None and m.rpo_met is False:
        out.append(
            {"kind": "rpo_breach", "message": f"RPO {m.achieved_rpo_ms} ms vs objective {m.rpo_objective_ms} ms"}
        )
    out += [{"kind": "teardown_incomplete", "message": e} for e in d.teardown_errors]
    return out


def build_predicate(
    d: Drill, *, executor: dict[str, Any], trigger: str, host: str, initiated_by: str
) -> dict[str, Any]:
    rb = d.loaded.runbook
    m = d.measurement
    v = d.validation
    verdict = verdict_of(d)
    pre = d.preflight
    results: dict[str, Any] = {
        "verdict": verdict,
        "rto_objective_ms": rb.objectives.rto_seconds * 1000,
        "rpo_objective_ms": rb.objectives.rpo_seconds * 1000 if rb.objectives.rpo_seconds is not None else None,
        "achieved_rto_ms": m.achieved_rto_ms if m else None,
        "rto_phases_ms": m.rto_phases_ms if m else {},
        "rto_met": m.rto_met if m else False,
        "achieved_rpo_ms": m.achieved_rpo_ms if m else None,
        "rpo_met": m.rpo_met if m else None,
        "rpo_method": RPO_METHODS.get(m.rpo_method, m.rpo_method) if m else None,
        "rto_definition": "restore request until all validators passed; excludes teardown, detection and decision time",
        "reasons": failure_reasons(d),
    }
    split = latest_rpo_split(d)
    if split is not None:
        results |= split
    kept = d.keep and d.error is None
    predicate: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "drill": {
            "id": d.run_id,
            "type": (pre.recovery_point.get("kind") if pre else None) or rb.source.kind,
            "trigger": trigger,
            "started_at": d.timeline[0].started_at if d.timeline else None,
            "finished_at": iso(d.clock.now()),
            "initiated_by": initiated_by,
            "host": host,
            "executor": executor,
        },
        "runbook": {
            "name": rb.name,
            "sha256": d.loaded.sha256,
            "path": str(d.loaded.path),
            "tags": dict(rb.tags),
            "schedule_every_seconds": rb.schedule.every_seconds if rb.schedule else None,
        },
        "objectives": {"rto_ms": results["rto_objective_ms"], "rpo_ms": results["rpo_objective_ms"]},
        "source": pre.source if pre else {"kind": rb.source.kind},
        "recovery_point": _recovery_point(d),
        "preflight_facts": pre.facts if pre else None,
        "target": d.backend.target_facts(),
        "isolation_checks": [f.to_dict() for f in d.isolation],
        "recovery": _proof(d),
        "endpoint": d.endpoint.public() if d.endpoint else None,
        "server_version": d.server_version,
        "timeline": [e.to_dict() for e in d.timeline],
        "marks": [{"name": k.name, "at": k.at, "source": k.source, "precision_ms": k.precision_ms} for k in d.marks],
        "results": results,
        "validation": {
            "passed": v.passed if v else False,
            "duration_ms": v.duration_ms if v else None,
            "newest_commit_at": v.newest_commit_at if v else None,
            "freshness_method": v.freshness_method if v else None,
            "findings": [f.to_dict() for f in v.findings] if v else [],
        },
        "deviations": deviations(d),
        "teardown": {
            "kept_until_expiry": kept,
            "resources": [r.to_dict() for r in d.teardown_results],
            "all_deleted": (not kept) and all(r.deleted for r in d.teardown_results) and not d.teardown_errors,
            "verified_at": max((r.verified_at for r in d.teardown_results if r.verified_at), default=None),
        },
        "error": {"state": d.failed_state, "type": type(d.error).__name__, "message": str(d.error)}
        if d.error
        else None,
        "interrupted": d.interrupted,
        "journal_errors": d.journal_errors,
    }
    result: dict[str, Any] = jsonable(predicate)
    return result
