"""A readable report rendered from a verified drill record (Markdown), for auditors.

Pure: statement in, text out. ``drill report`` verifies the envelope first, so
what is rendered is exactly what was signed; the report says which key
verified it and how to check it again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]


def _ms(v: Any) -> str:
    return f"{v / 1000:.3f} s" if isinstance(v, int) else "—"


def _cell(v: Any) -> str:
    text = "—" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(statement: dict[str, Any], *, evidence_name: str, keyid: str | None = None) -> str:
    p: dict[str, Any] = statement.get("predicate", {})
    drill, rb, res = p.get("drill", {}), p.get("runbook", {}), p.get("results", {})
    val, td = p.get("validation", {}), p.get("teardown", {})
    rp = p.get("recovery_point") or {}
    lines = [
        f"# Restore drill {drill.get('id')}: {str(res.get('verdict', 'unknown')).upper()}",
        "",
        f"- Runbook: `{rb.get('name')}` (sha256 `{rb.get('sha256')}`)",
        f"- Ran: {drill.get('started_at')} → {drill.get('finished_at')} on `{drill.get('host')}` "
        f"by `{drill.get('initiated_by')}` ({drill.get('trigger')}), "
        f"{(drill.get('executor') or {}).get('tool')} {(drill.get('executor') or {}).get('version')}",
        f"- Recovery point: {rp.get('kind')}, target {rp.get('target_time', '—')}",
        f"- Evidence: `{evidence_name}`" + (f", signature verified with key `{keyid}`" if keyid else ""),
        "",
        "## Objectives",
        "",
        *_table(
            ["", "achieved", "objective", "met"],
            [
                ["RTO", _ms(res.get("achieved_rto_ms")), _ms(res.get("rto_objective_ms")), res.get("rto_met")],
                ["RPO", _ms(res.get("achieved_rpo_ms")), _ms(res.get("rpo_objective_ms")), res.get("rpo_met")],
            ],
        ),
        "",
        f"RTO: {res.get('rto_definition', '')}. RPO method: {res.get('rpo_method')}.",
    ]
    reg = p.get("regression")
    if reg:
        flag = "**regression**" if reg.get("flag") else "within the usual range"
        lines += [
            "",
            f"RTO {reg.get('delta_pct'):+} % against the recent median {_ms(reg.get('baseline_rto_ms'))}: {flag}.",
        ]
        trend, proj = reg.get("trend") or {}, reg.get("projection") or {}
        if trend.get("direction"):
            slope = trend.get("slope_ms_per_day")
            lines.append(f"Trend over {trend.get('drills')} drills: {trend['direction']} "
                         f"(Mann-Kendall p = {trend.get('p_value')}, Theil-Sen {slope} ms/day).")  # fmt: skip
        if proj.get("summary") or proj.get("reason"):
            lines.append(f"Projection: {proj.get('summary') or proj.get('reason')}.")
    phases = res.get("rto_phases_ms") or {}
    if phases:
        lines += ["", "Phases: " + ", ".join(f"{k} {_ms(v)}" for k, v in phases.items()) + "."]
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["state", "attempt", "started (UTC)", "duration", "outcome", "error"],
        [[e.get("state"), e.get("attempt"), e.get("started_at"), _ms(e.get("duration_ms")), e.get("outcome"),
          e.get("error")] for e in p.get("timeline", [])],
    )  # fmt: skip
    lines += ["", "## Isolation", ""]
    lines += _table(
        ["check", "subject", "passed", "detail"],
        [[c.get("check"), c.get("subject"), c.get("passed"), c.get("detail")] for c in p.get("isolation_checks", [])],
    )
    lines += ["", f"## Validation ({'passed' if val.get('passed') else 'failed'})", ""]
    lines += _table(
        ["validator", "check", "expected", "actual", "passed"],
        [[f.get("validator"), f.get("check"), f.get("expected"), f.get("actual"), f.get("passed")]
         for f in val.get("findings", [])],
    )  # fmt: skip
    devs = p.get("deviations") or []
    if devs:
        lines += ["", "## Deviations", ""] + [f"- {d.get('kind')}: {d.get('message')}" for d in devs]
    lines += ["", "## Teardown", ""]
    lines += _table(
        ["resource", "id", "deleted", "detail"],
        [[r.get("kind"), r.get("id"), r.get("deleted"), r.get("detail")] for r in td.get("resources", [])],
    )
    lines += ["", f"All deleted: {td.get('all_deleted')}; kept for inspection: {td.get('kept_until_expiry')}."]
    chain = p.get("chain") or {}
    lines += [
        "",
        "## Checking this record",
        "",
        f"Chain `{chain.get('id')}` record {chain.get('seq')}; previous envelope sha256 "
        f"`{chain.get('prev_envelope_sha256')}`.",
        "",
        f"`drill verify {evidence_name} --key PUBLIC_KEY.pub` verifies the signature offline; "
        "docs/evidence.md shows how without this tool.",
        "",
    ]
    return "\n".join(lines)
