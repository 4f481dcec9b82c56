"""A readable report rendered from a verified drill record (Markdown), for auditors.

Pure: statement in, text out. ``drill report`` verifies the envelope first, so
what is rendered is exactly what was signed; the report says which key
verified it and how to check it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from drills.record_model import DrillRecord, Reason

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


def run_order(phases: Mapping[str, Any], timeline: Sequence[Any]) -> list[str]:
    """Phase names in the order the drill ran them (the timeline's), not the signed JSON's sorted keys."""
    order: list[str] = []
    for entry in timeline:
        state = entry.get("state") if isinstance(entry, dict) else getattr(entry, "state", None)
        if isinstance(state, str) and state in phases and state not in order:
            order.append(state)
    return order + [k for k in phases if k not in order]


def _regression(reg: dict[str, Any] | None) -> list[str]:
    """The regression section (an open object in the model: its shape is drills.trend's)."""
    if not reg:
        return []
    flag = "**regression**" if reg.get("flag") else "within the usual range"
    lines = [
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
    return lines


def render_markdown(statement: dict[str, Any], *, evidence_name: str, keyid: str | None = None) -> str:
    """The report of a *verified* statement, read through the typed record (:mod:`drills.record_model`):
    a record that does not fit the published schema is an EvidenceError naming the field, not a report."""
    rec = DrillRecord.parse(statement.get("predicate"))
    drill, rb, res, val, td = rec.drill, rec.runbook, rec.results, rec.validation, rec.teardown
    rp = rec.recovery_point or {}
    executor = drill.executor or {}
    reasons = [(f"{r.kind}: {r.message}" if r.message else r.kind) if isinstance(r, Reason) else r for r in res.reasons]
    lines = [
        f"# Restore drill {_text(drill.id)}: {res.verdict.upper()}",
        "",
        f"- Runbook: `{_text(rb.name)}` (sha256 `{_text(rb.sha256)}`)",
        f"- Ran: {_text(drill.started_at)} → {_text(drill.finished_at)} on `{_text(drill.host)}` "
        f"by `{_text(drill.initiated_by)}` ({_text(drill.trigger)}), "
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
                ["RTO", human_ms(res.achieved_rto_ms), human_ms(res.rto_objective_ms), _yes(res.rto_met)],
                ["RPO", human_ms(res.achieved_rpo_ms), human_ms(res.rpo_objective_ms), _yes(res.rpo_met)],
            ],
        ),
        "",
        f"RTO: {_text(res.rto_definition)}. RPO method: {_text(res.rpo_method)}.",
        *_regression(rec.regression),
    ]
    phases = res.rto_phases_ms
    if phases:
        ordered = run_order(phases, rec.timeline)
        lines += ["", "Phases (in run order): " + ", ".join(f"{k} {human_ms(phases[k])}" for k in ordered) + "."]
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["state", "attempt", "started (UTC)", "duration", "outcome", "error"],
        [[e.state, e.attempt, e.started_at, human_ms(e.duration_ms), e.outcome, e.error] for e in rec.timeline],
    )
    lines += ["", "## Isolation", ""]
    lines += _table(
        ["check", "subject", "passed", "detail"],
        [[c.get("check"), c.get("subject"), _yes(c.get("passed")), c.get("detail")] for c in rec.isolation_checks],
    )
    lines += ["", f"## Validation ({'passed' if val.passed else 'failed'})", ""]
    lines += _table(
        ["validator", "check", "expected", "actual", "passed"],
        [[f.validator, f.check, f.expected, f.actual, _yes(f.passed)] for f in val.findings],
    )
    if rec.deviations:
        lines += ["", "## Deviations", ""]
        lines += [f"- {_text(d.get('kind'))}: {_text(d.get('message'))}" for d in rec.deviations]
    lines += ["", "## Teardown", ""]
    lines += _table(
        ["resource", "id", "deleted", "detail"],
        [[r.get("kind"), r.get("id"), _yes(r.get("deleted")), r.get("detail")] for r in td.resources],
    )
    if td.outstanding:
        lines += ["", "Not confirmed removed (an aborted run's leftovers; `drill teardown RUN_ID` removes them):", ""]
        lines += [f"- {_text(r.get('kind'))} `{_text(r.get('id'))}`" for r in td.outstanding]
    lines += ["", f"All deleted: {_yes(td.all_deleted)}; kept for inspection: {_yes(td.kept_until_expiry)}."]
    trail = (rec.evidence_trail or {}).get("deviations") or []
    if trail:
        lines += [
            "",
            "## Evidence trail deviations",
            "",
            "Found in the evidence directory when this record was written:",
        ]
        lines += [""] + [f"- {_text(d.get('kind'))}: {_text(d.get('message'))}" for d in trail]
    chain = rec.chain
    lines += [
        "",
        "## Checking this record",
        "",
        f"Chain `{_text(chain.id if chain else None)}` record {_text(chain.seq if chain else None)}; previous "
        f"envelope sha256 `{_text(chain.prev_envelope_sha256 if chain else None)}`.",
        "",
        f"`drill verify {evidence_name} --key PUBLIC_KEY.pub` verifies the signature offline, and "
        "`drill verify --chain DIR --key PUBLIC_KEY.pub` the chain of records; "
        "docs/evidence.md shows how without this tool.",
        "",
    ]
    return "\n".join(lines)
