"""The RTO trend chart: each drill's RTO phases stacked, the objective line, failed drills marked.

Drawn with matplotlib (the optional ``plot`` extra) rather than hand-written
SVG: axes, date ticks and legends are its job. The SVG is deterministic for
a given matplotlib version (fixed hash salt, no creation date), because a
pack's report is re-rendered by ``drill verify --pack`` and compared byte
for byte. Without matplotlib the chart is left out and the report says so.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from drills.evidence.period import DrillRow

__all__ = ["available", "rto_chart_svg"]


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def rto_chart_svg(rows: Sequence[DrillRow], title: str) -> bytes | None:
    """An SVG of the drills' RTO in minutes, phases stacked; None without matplotlib or without an RTO."""
    measured = [r for r in rows if r.rto_ms is not None]
    if not measured or not available():
        return None
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "restore-drills"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, and searchable
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.add_subplot()
    xs = list(range(len(measured)))
    phases: list[str] = []
    for r in measured:
        phases += [name for name, _ in r.phases_ms if name not in phases]
    bottom = [0.0] * len(measured)
    for name in phases:
        heights = [dict(r.phases_ms).get(name, 0) / 60000 for r in measured]
        ax.bar(xs, heights, bottom=bottom, label=name, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    rest = [max(0.0, (r.rto_ms or 0) / 60000 - b) for r, b in zip(measured, bottom, strict=True)]
    if any(rest):
        ax.bar(xs, rest, bottom=bottom, label="other", width=0.7, color="#bbbbbb")
    objective = next((r.rto_objective_ms for r in reversed(measured) if r.rto_objective_ms), None)
    if objective:
        ax.axhline(objective / 60000, color="#c0392b", linestyle="--", linewidth=1.2, label="RTO objective")
    failed = [(x, (r.rto_ms or 0) / 60000) for x, r in zip(xs, measured, strict=True) if r.verdict != "passed"]
    if failed:
        ax.scatter(
            [f[0] for f in failed], [f[1] for f in failed], marker="x", color="#c0392b", zorder=3, label="failed"
        )
    ax.set_xticks(xs, [r.finished_at.strftime("%Y-%m-%d") for r in measured], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("RTO (minutes)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncols=3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
