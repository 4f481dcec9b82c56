"""A readable report rendered from a verified drill record (Markdown), for auditors.

Pure: statement in, text out. ``drill report`` verifies the envelope first, so
what is rendered is exactly what was signed; the report says which key
verified it and how to check it again.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["human_ms", "render_markdown", "run_order"]

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000))


def human_ms(value: Any, missing: str = "—") -> str:
    """A duration as people write it: ``2m``, ``1h 30m``, ``12m 3.456s``, ``0.25s``. Exact: the
    milliseconds are all shown (``2m 0.001s``), only zero parts are left out."""
    if not isinstance(value, int) or isinstance(value, bool):
        return missing
    sign, rest = ("-" if value < 0 else ""), abs(value)
    parts: list[str] = []
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    seconds, millis = divmod(rest, 1000)
    if millis:
        parts.append(f"{seconds}.{millis:03d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return sign + " ".join(parts)


def _text(v: Any) -> str:
    """A recorded value as written in the record (JSON spelling), never a Python repr."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))


def _yes(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return _text(v)


def _cell(v: Any) -> str:
    return _text(v).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def run_order(phases: dict[str, Any], timeline: list[Any]) -> list[str]:
    """Phase names in the order the drill ran them (the timeline's), not the signed JSON's sorted keys."""
    order: list[str] = []
    for entry in timeline:
        state = entry.get("state") if isinstance(entry, dict) else None
        if state in phases and state not in order:
            order.append(state)
    return order + [k for k in phases if k not in order]


def render_markdown(statement: dict[str, Any], *, evidence_name: str, keyid: str | None = None) -> str:
    p: dict[str, Any] = statement.get("predicate", {})
    drill, rb, res = p.get("drill", {}), p.get("runbook", {}), p.get("results", {})
    val, td = p.get("validation", {}), p.get("teardown", {})
    rp = p.get("recovery_point") or {}
    executor = drill.get("executor") or {}
    reasons = res.get("reasons") or []
    lines = [
        f"# Restore drill {_text(drill.get('id'))}: {str(res.get('verdict', 'unknown')).upper()}",
        "",
        f"- Runbook: `{_text(rb.get('name'))}` (sha256 `{_text(rb.get('sha256'))}`)",
        f"- Ran: {_text(drill.get('started_at'))} → {_text(drill.get('finished_at'))} on `{_text(drill.get('host'))}` "
        f"by `{_text(drill.get('initiated_by'))}` ({_text(drill.get('trigger'))}), "
        f"{_text(executor.get('tool'))} {_text(executor.get('version'))}",
        f"- Recovery point: {_text(rp.get('kind'))}, target {_text(rp.get('target_time'))}",
        f"- Evidence: `{evidence_name}`" + (f", signature verified with key `{keyid}`" if keyid else ""),
        *(["", "Why it did not pass:", ""] + [f"- {_text(r)}" for r in reasons] if reasons else []),
        "",
        "## Objectives",
        "",
        *_table(
            ["", "achieved", "objective", "met"],
            [
                [
                    "RTO",
                    human_ms(res.get("achieved_rto_ms")),
                    human_ms(res.get("rto_objective_ms")),
                    _yes(res.get("rto_met")),
                ],
                [
                    "RPO",
                    human_ms(res.get("achieved_rpo_ms")),
                    human_ms(res.get("rpo_objective_ms")),
                    _yes(res.get("rpo_met")),
                ],
            ],
        ),
        "",
        f"RTO: {_text(res.get('rto_definition'))}. RPO method: {_text(res.get('rpo_method'))}.",
    ]
    reg = p.get("regression")
    if reg:
        flag = "**regression**" if reg.get("flag") else "within the usual range"
        lines += [
            "",
            f"RTO {reg.get('delta_pct'):+} % against the recent median {human_ms(reg.get('baseline_rto_ms'))}: {flag}.",
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
        ordered = run_order(phases, p.get("timeline") or [])
        lines += ["", "Phases (in run order): " + ", ".join(f"{k} {human_ms(phases[k])}" for k in ordered) + "."]
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["state", "attempt", "started (UTC)", "duration", "outcome", "error"],
        [[e.get("state"), e.get("attempt"), e.get("started_at"), human_ms(e.get("duration_ms")), e.get("outcome"),
          e.get("error")] for e in p.get("timeline", [])],
    )  # fmt: skip
    lines += ["", "## Isolation", ""]
    lines += _table(
        ["check", "subject", "passed", "detail"],
        [
            [c.get("check"), c.get("subject"), _yes(c.get("passed")), c.get("detail")]
            for c in p.get("isolation_checks", [])
        ],
    )
    lines += ["", f"## Validation ({'passed' if val.get('passed') else 'failed'})", ""]
    lines += _table(
        ["validator", "check", "expected", "actual", "passed"],
        [[f.get("validator"), f.get("check"), f.get("expected"), f.get("actual"), _yes(f.get("passed"))]
         for f in val.get("findings", [])],
    )  # fmt: skip
    devs = p.get("deviations") or []
    if devs:
        lines += ["", "## Deviations", ""] + [f"- {_text(d.get('kind'))}: {_text(d.get('message'))}" for d in devs]
    lines += ["", "## Teardown", ""]
    lines += _table(
        ["resource", "id", "deleted", "detail"],
        [[r.get("kind"), r.get("id"), _yes(r.get("deleted")), r.get("detail")] for r in td.get("resources", [])],
    )
    outstanding = td.get("outstanding") or []
    if outstanding:
        lines += ["", "Not confirmed removed (an aborted run's leftovers; `drill teardown RUN_ID` removes them):", ""]
        lines += [f"- {_text(r.get('kind'))} `{_text(r.get('id'))}`" for r in outstanding]
    kept = _yes(td.get("kept_until_expiry"))
    lines += ["", f"All deleted: {_yes(td.get('all_deleted'))}; kept for inspection: {kept}."]
    trail = (p.get("evidence_trail") or {}).get("deviations") or []
    if trail:
        lines += [
            "",
            "## Evidence trail deviations",
            "",
            "Found in the evidence directory when this record was written:",
        ]
        lines += [""] + [f"- {_text(d.get('kind'))}: {_text(d.get('message'))}" for d in trail]
    chain = p.get("chain") or {}
    lines += [
        "",
        "## Checking this record",
        "",
        f"Chain `{_text(chain.get('id'))}` record {_text(chain.get('seq'))}; previous envelope sha256 "
        f"`{_text(chain.get('prev_envelope_sha256'))}`.",
        "",
        f"`drill verify {evidence_name} --key PUBLIC_KEY.pub` verifies the signature offline, and "
        "`drill verify --chain DIR --key PUBLIC_KEY.pub` the chain of records; "
        "docs/evidence.md shows how without this tool.",
        "",
    ]
    return "\n".join(lines)
