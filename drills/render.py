"""The human summary of a drill (one module for the CLI and the demos alike), and the lines of ``drill runs``.

Rendering only: it reads the result's JSON form and returns lines; the caller decides where they go.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_json", "run_line", "summary_lines"]


def _regression_line(reg: dict[str, Any] | None) -> list[str]:
    if not reg:
        return []
    mark = "REGRESSION: " if reg["flag"] else ""
    return [
        f"  {mark}RTO {reg['delta_pct']:+d} % against the median of the last {reg['baseline_drills']} passed drills "
        f"({reg['baseline_rto_ms'] / 1000:.2f}s)"
    ] + [f"  {p['summary']}" for p in [reg.get("projection") or {}] if p.get("summary")]


def summary_lines(res: Any) -> list[str]:
    """The lines a person reads after ``drill run`` or ``drill demo``: verdict, RTO/RPO against objectives,
    the failed findings and why the drill failed. ``res`` is a :class:`drills.api.RunResult` (its ``to_json()``
    is what is rendered, so the JSON output and the summary cannot disagree)."""
    r = res.to_json()
    rto = f"{r['rto_seconds']:.2f}s" if r["rto_seconds"] is not None else "not reached"
    met = {True: ", met", False: ", MISSED", None: ""}
    rto_met = met[r["rto_met"] if r["rto_seconds"] is not None else None]
    rpo = f"{r['rpo_seconds']:.3f}s" if r["rpo_seconds"] is not None else "not measured"
    rpo_obj = f" (objective {r['rpo_objective_seconds']}s)" if r["rpo_objective_seconds"] is not None else ""
    failed = [f for f in r["findings"] if not f.get("passed")]
    lines = [
        "",
        f"drill {r['run_id']}: {r['verdict'].upper()}",
        f"  RTO achieved {rto} (objective {r['rto_objective_seconds']}s{rto_met})",
        "    " + ("  ".join(f"{k} {v / 1000:.2f}s" for k, v in r["rto_phases_ms"].items()) or "no phase completed"),
        f"  RPO achieved {rpo}{rpo_obj[:-1] + met[r['rpo_met']] + ')' if rpo_obj else ''}",
        *_regression_line(r.get("rto_regression")),
        f"  findings: {len(r['findings']) - len(failed)} passed, {len(failed)} failed",
    ]
    lines += [
        f"    ✗ {f['validator']}: {f['check']}: expected {f.get('expected')!r}, got {f.get('actual')!r}" for f in failed
    ]
    if "archive_lag_seconds" in r:
        lag, loss = r["archive_lag_seconds"], r["loss_in_archive_seconds"]
        lines.append(
            "  latest: archive lag "
            + (f"{lag:.3f}s" if lag is not None else "unknown")
            + ", loss inside the archive "
            + (f"{loss:.3f}s" if loss is not None else "unknown")
        )
    if r["reasons"]:
        lines.append("  failed because:")
        lines += [f"    - {reason}" for reason in r["reasons"]]
    lines.append(f"  evidence: {r['evidence']}")
    lines += [f"  {d['channel']} not delivered ({d['target']}): {d['error']}" for d in r["deliveries"] if not d["ok"]]
    return lines


def run_json(r: Any, k: Any) -> dict[str, Any]:
    """One run of ``drill runs --json``: its journal summary ``r`` and what it kept ``k`` (a ``KeepState``)."""
    return {
        "run_id": r.run_id,
        "runbook": r.runbook,
        "started_at": r.started_at,
        "status": r.status,
        "last_state": r.last_state,
        "verdict": r.verdict,
        "evidence": r.evidence,
        "outstanding": [x.to_dict() for x in r.outstanding],
        "kept": r.kept,
        "kept_until": k.to_dict()["expires_at"],
        "swept": k.swept,
    }


def run_line(r: Any, k: Any) -> str:
    """One run of ``drill runs``: id, runbook, status, last state, verdict, and what it left or kept."""
    until = f" until {k.to_dict()['expires_at']}" if k.expires_at else ""
    why = f"kept for inspection{until}" if r.kept else "left"
    left = f"  {len(r.outstanding)} resource(s) {why}: drill teardown {r.run_id}" if r.outstanding else ""
    swept = f"  swept: {len(k.swept)} resource(s) removed by drill sweep" if k.swept else ""
    return f"{r.run_id}  {r.runbook:<24} {r.status:<11} {r.last_state:<12} {r.verdict or '-':<7}{left}{swept}"
