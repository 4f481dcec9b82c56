"""The evidence pack's one HTML page, rendered from verified records only.

Self-contained and inert: no script, no external resource, a Content
Security Policy that forbids both (``default-src 'none'``; the one inline
style is allowed by its hash, the chart is a ``data:`` image). Every number
an auditor reads sits in a cell carrying ``data-run``/``data-field``/
``data-value`` with the record's raw value, so a test (or an auditor's
script) can compare the page with the records without parsing prose.

Rendering is a pure function of the period summary and the pack's metadata:
``drill verify --pack`` renders again and compares byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Mapping
from datetime import datetime

from drills.evidence.chart import ChartPoint, rto_chart
from drills.evidence.controls import CONTROLS
from drills.evidence.period import DrillRow, PeriodSummary, RunbookSummary

__all__ = ["fmt_duration", "render_pack_html"]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1b1b;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;width:100%}
th,td{border:1px solid #d0d0d0;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1e7b34;font-weight:600}.fail{color:#b3261e;font-weight:600}
.meta td:first-child{width:14em;color:#555}.note{color:#555}img.chart{max-width:100%}
code{font-size:.9em}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; base-uri 'none'; form-action 'none'"


def fmt_duration(ms: int | None) -> str:
    """Milliseconds as people write durations: ``850 ms``, ``3s``, ``12m 3.456s``, ``4h``, ``1d 2h``."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms} ms"
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    if seconds or millis:
        parts.append(f"{seconds}.{millis:03d}s" if millis else f"{seconds}s")
    return " ".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "–"


def _cell(run: str, name: str, value: int | str | None, text: str, *, num: bool = False) -> str:
    raw = "" if value is None else str(value)
    cls = ' class="num"' if num else ""
    return f'<td{cls} data-run="{_e(run)}" data-field="{_e(name)}" data-value="{_e(raw)}">{_e(text)}</td>'


def _verdict(v: str) -> str:
    return f'<span class="{"pass" if v == "passed" else "fail"}">{_e(v)}</span>'


def _met(flag: bool | None) -> str:
    return "–" if flag is None else ("met" if flag else "missed")


def _summary_table(runbooks: Iterable[RunbookSummary]) -> str:
    head = (
        "<tr><th>runbook</th><th>drills</th><th>required</th><th>passed</th><th>pass rate</th><th>cadence</th>"
        "<th>RTO objective</th><th>median RTO</th><th>worst RTO</th><th>RPO objective</th><th>worst RPO</th>"
        "<th>last passed</th></tr>"
    )
    rows = []
    for rb in runbooks:
        last = rb.drills[-1]
        rate = rb.pass_rate
        cadence = (
            "no schedule"
            if rb.cadence_met is None
            else f"{'met' if rb.cadence_met else 'missed'} (every {fmt_duration((rb.every_s or 0) * 1000)}, "
            f"longest gap {fmt_duration((rb.longest_gap_s or 0) * 1000)})"
        )
        k = f"runbook:{rb.name}"
        rows.append(
            "<tr>"
            f"<td>{_e(rb.name)}</td>"
            + _cell(k, "drills", len(rb.drills), str(len(rb.drills)), num=True)
            + _cell(k, "required", rb.required, "–" if rb.required is None else str(rb.required), num=True)
            + _cell(k, "passed", rb.passed, str(rb.passed), num=True)
            + _cell(k, "pass_rate", None if rate is None else f"{rate:.4f}", "–" if rate is None else f"{rate:.0%}")
            + _cell(k, "cadence_met", None if rb.cadence_met is None else str(rb.cadence_met).lower(), cadence)
            + _cell(k, "rto_objective_ms", last.rto_objective_ms, fmt_duration(last.rto_objective_ms), num=True)
            + _cell(k, "median_rto_ms", rb.median_rto_ms, fmt_duration(rb.median_rto_ms), num=True)
            + _cell(k, "worst_rto_ms", rb.worst_rto_ms, fmt_duration(rb.worst_rto_ms), num=True)
            + _cell(k, "rpo_objective_ms", last.rpo_objective_ms, fmt_duration(last.rpo_objective_ms), num=True)
            + _cell(k, "worst_rpo_ms", rb.worst_rpo_ms, fmt_duration(rb.worst_rpo_ms), num=True)
            + _cell(
                k,
                "last_passed",
                rb.last_passed.run_id if rb.last_passed else None,
                _when(rb.last_passed.finished_at) if rb.last_passed else "never in this period",
            )
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _drill_rows(drills: Iterable[DrillRow]) -> str:
    head = (
        "<tr><th>finished</th><th>run</th><th>seq</th><th>verdict</th><th>RTO</th><th>RPO</th>"
        "<th>phases</th><th>why it failed</th></tr>"
    )
    rows = []
    for d in drills:
        phases = ", ".join(f"{name} {fmt_duration(ms)}" for name, ms in d.phases_ms) or "–"
        why = "; ".join(d.reasons) + (" (interrupted)" if d.interrupted else "")
        rows.append(
            "<tr>"
            + _cell(d.run_id, "finished_at", d.finished_at.isoformat(), _when(d.finished_at))
            + f"<td><code>{_e(d.run_id)}</code></td>"
            + _cell(d.run_id, "seq", d.seq, "–" if d.seq is None else str(d.seq), num=True)
            + f'<td data-run="{_e(d.run_id)}" data-field="verdict" data-value="{_e(d.verdict)}">'
            + f"{_verdict(d.verdict)}</td>"
            + _cell(d.run_id, "rto_ms", d.rto_ms, f"{fmt_duration(d.rto_ms)} ({_met(d.rto_met)})", num=True)
            + _cell(d.run_id, "rpo_ms", d.rpo_ms, f"{fmt_duration(d.rpo_ms)} ({_met(d.rpo_met)})", num=True)
            + f"<td>{_e(phases)}</td><td>{_e(why or '–')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _runbook_section(rb: RunbookSummary) -> str:
    points = [ChartPoint(d.finished_at, d.verdict, d.rto_ms, d.phases_ms, d.rto_objective_ms) for d in rb.drills]
    svg = rto_chart(points, f"{rb.name}: RTO per drill")
    chart = (
        f'<img class="chart" alt="RTO per drill of {_e(rb.name)}, phases stacked, objective dashed" '
        f'src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}">'
        if svg
        else '<p class="note">Chart left out: matplotlib is not installed (pip install "restore-drills[plot]").</p>'
    )
    gaps = (
        f'<p class="fail">Records missing from the chain inside this period: seq '
        f"{_e(', '.join(str(s) for s in rb.missing_seq))}. Ask for them, or for why they are gone.</p>"
        if rb.missing_seq
        else ""
    )
    return f"<h3>{_e(rb.name)}</h3>{gaps}{chart}{_drill_rows(rb.drills)}"


def _deviations(summary: PeriodSummary) -> str:
    if not summary.deviations:
        return "<p>No drill failed in this period.</p>"
    rows = []
    for dev in summary.deviations:
        f = dev.failed
        fix = dev.remediated_by
        rows.append(
            "<tr>"
            f"<td>{_e(f.runbook)}</td>"
            + _cell(f.run_id, "failed_at", f.finished_at.isoformat(), _when(f.finished_at))
            + f"<td><code>{_e(f.run_id)}</code></td>"
            + f"<td>{_e('; '.join(f.reasons) or 'no reason recorded')}</td>"
            + _cell(
                f.run_id,
                "remediated_by",
                fix.run_id if fix else None,
                f"passed {_when(fix.finished_at)} ({fix.run_id})" if fix else "open: no later drill passed",
            )
            + "</tr>"
        )
    head = "<tr><th>runbook</th><th>failed</th><th>run</th><th>cause</th><th>remediation</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _sources(summary: PeriodSummary) -> str:
    rows = []
    for s in summary.sources:
        last = s.last_passed
        rows.append(
            f"<tr><td><code>{_e(s.source)}</code></td><td>{_e(s.runbook)}</td>"
            + _cell(
                f"source:{s.source}",
                "last_passed",
                last.run_id if last else None,
                f"{_when(last.finished_at)} ({last.run_id})" if last else "no successful restore in this period",
            )
            + "</tr>"
        )
    head = "<tr><th>backup source</th><th>runbook</th><th>last successful restore</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _controls() -> str:
    rows = "".join(
        f"<tr><td>{_e(c.framework)}</td><td>{_e(c.ref)}</td><td>{_e(c.requirement)}</td><td>{_e(c.evidence)}</td></tr>"
        for c in CONTROLS
    )
    head = "<tr><th>framework</th><th>control</th><th>requirement (paraphrased)</th><th>evidence in this pack</th></tr>"
    return (
        f"<table>{head}{rows}</table>"
        '<p class="note">A pack is evidence for these controls, not the whole of them: backup policy, '
        "approvals and off-site copies are outside what a drill observes.</p>"
    )


def render_pack_html(summary: PeriodSummary, meta: Mapping[str, str]) -> str:
    """The report; ``meta``: ``generated_at``, ``tool_version``, ``keyids`` (comma-separated), ``files``."""
    unverified = (
        "<ul>" + "".join(f"<li><code>{_e(f)}</code>: {_e(why)}</li>" for f, why in summary.unverified) + "</ul>"
        if summary.unverified
        else "<p>Every evidence file found verified.</p>"
    )
    body = [
        "<h1>Restore drill evidence pack</h1>",
        '<table class="meta">',
        f"<tr><td>period</td><td>{_when(summary.since)} to {_when(summary.until)} (end excluded)</td></tr>",
        f"<tr><td>generated</td><td>{_e(meta.get('generated_at', ''))} by restore-drills "
        f"{_e(meta.get('tool_version', ''))}</td></tr>",
        f"<tr><td>signing keys</td><td><code>{_e(meta.get('keyids', ''))}</code></td></tr>",
        f"<tr><td>records</td><td>{sum(len(r.drills) for r in summary.runbooks)} verified drill records "
        f"from {len(summary.runbooks)} runbook(s)</td></tr>",
        "</table>",
        '<p class="note">Rendered only from records whose signatures verified; see <code>verification.txt</code>. '
        "<code>drill verify --pack</code> checks every file and renders this page again.</p>",
        "<h2>Summary per runbook</h2>",
        _summary_table(summary.runbooks) if summary.runbooks else "<p>No verified drill in this period.</p>",
        "<h2>Drills</h2>",
        *(_runbook_section(rb) for rb in summary.runbooks),
        "<h2>Deviations and remediation</h2>",
        _deviations(summary),
        "<h2>Last successful restore per backup source</h2>",
        _sources(summary) if summary.sources else "<p>No drill in this period.</p>",
        "<h2>Files that did not verify</h2>",
        unverified,
        "<h2>Control mapping</h2>",
        _controls(),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Restore drill evidence pack {_e(summary.since.date())} to {_e(summary.until.date())}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
