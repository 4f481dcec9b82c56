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
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ChartPoint", "available", "rto_chart"]


@dataclass(frozen=True)
class ChartPoint:
    """One drill on the chart, whatever record view it came from (pack rows, history rows)."""

    when: datetime
    verdict: str
    rto_ms: int | None
    phases_ms: tuple[tuple[str, int], ...]  # in run order
    objective_ms: int | None
    restored_bytes: int | None = None
    regression: bool = False


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def rto_chart(points: Sequence[ChartPoint], title: str, fmt: str = "svg") -> bytes | None:
    """RTO in minutes per drill, phases stacked, the objective dashed, failures and regressions marked,
    restored size on a second axis; ``fmt`` is ``svg`` or ``png``. None without matplotlib or an RTO."""
    measured = [r for r in points if r.rto_ms is not None]
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
    objective = next((r.objective_ms for r in reversed(measured) if r.objective_ms), None)
    if objective:
        ax.axhline(objective / 60000, color="#c0392b", linestyle="--", linewidth=1.2, label="RTO objective")
    marks = (
        ([i for i, r in enumerate(measured) if r.verdict != "passed"], "x", "failed"),
        ([i for i, r in enumerate(measured) if r.regression], "^", "regression"),
    )
    for hit, marker, label in marks:
        if hit:
            ys = [(measured[i].rto_ms or 0) / 60000 for i in hit]
            ax.scatter(hit, ys, marker=marker, color="#c0392b", zorder=3, label=label)
    ax.set_xticks(xs, [r.when.strftime("%Y-%m-%d") for r in measured], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("RTO (minutes)")
    ax.set_title(title, fontsize=10)
    sizes = [(x, r.restored_bytes / 1e9) for x, r in zip(xs, measured, strict=True) if r.restored_bytes]
    if sizes:
        ax2 = ax.twinx()
        ax2.plot([s[0] for s in sizes], [s[1] for s in sizes], color="#444444", marker=".", linewidth=1, label="size")
        ax2.set_ylabel("restored size (GB)")
        ax2.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", ncols=3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else {"Software": None})
    return buf.getvalue()
