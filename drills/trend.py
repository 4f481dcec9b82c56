"""RTO statistics over a runbook's history: robust baseline, trend test, RTO per GB, projection.

Pure: numbers and dates in, numbers, dates and sentences out; no I/O, no clock. The methods are
the ones a statistician reaches for with small, noisy, outlier-prone samples:

- **Baseline**: the median and the MAD (median absolute deviation, scaled by 1.4826 so it
  estimates a standard deviation under normal noise) of the last ``BASELINE_WINDOW`` passed
  drills. A drill is flagged when its RTO exceeds ``median + max(K * 1.4826 * MAD, 10 % of the
  median, 1 s)``. ``K = 3`` is the "very conservative" cut of Leys et al. (2013); the floors keep a
  history of identical drills (MAD 0) from flagging scheduler jitter. The median and the MAD are
  not moved by one bad night, unlike a mean and a standard deviation.
- **Trend**: Mann-Kendall (a rank test, so a single outlier cannot fake or hide a trend) with its
  two-sided p-value: exact (from the distribution of inversions of a permutation) for up to 50
  drills without ties, the normal approximation with the tie correction otherwise. The size of
  the trend is the Theil-Sen slope (the median of all pairwise slopes), which ignores up to ~29 %
  of wild points.
- **RTO per GB and projection**: a Theil-Sen line of RTO against restored size (its intercept is
  the fixed cost of a drill, its slope the marginal cost per GB) and a Theil-Sen line of restored
  size against time (the growth). Where the two meet the objective is when the RTO is expected to
  cross it, provided the growth is itself a significant Mann-Kendall trend.

Evidence holds integers and strings only (RFC 8785), so rates are integers with their unit in the
field name and p-values are strings of 4 significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "BASELINE_WINDOW",
    "GB",
    "MIN_MARGIN_MS",
    "MIN_MARGIN_PCT",
    "TREND_ALPHA",
    "TREND_MIN_POINTS",
    "Baseline",
    "K",
    "MannKendall",
    "Point",
    "baseline",
    "mad",
    "mann_kendall",
    "median",
    "project",
    "regression_record",
    "restored_bytes",
    "theil_sen",
    "trend",
]

GB = 1_000_000_000  # decimal gigabyte, as storage is billed
MAD_SCALE = 1.4826  # MAD * this estimates sigma for normal noise
BASELINE_WINDOW = 10  # recent passed drills the baseline is built from
MAD_MIN_POINTS = 3  # below this the MAD means nothing; only the floors apply
K = 3.0  # flag beyond K robust standard deviations
MIN_MARGIN_PCT = 10  # ... and never closer than 10 % of the median
MIN_MARGIN_MS = 1000  # ... nor than one second
TREND_MIN_POINTS = 5  # with 4 points the smallest exact two-sided p is 1/12: no trend can be shown
TREND_ALPHA = 0.05
TREND_WINDOW = 200  # Mann-Kendall and Theil-Sen are O(n^2): the last 200 drills are plenty
EXACT_MAX_N = 50
PROJECTION_MIN_DAYS = 7  # growth measured over less than a week is noise
PROJECTION_HORIZON_DAYS = 3650
DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class Point:
    """One drill with a measured RTO (its validators passed), as the statistics see it."""

    at: datetime
    rto_ms: int
    restored_bytes: int | None = None
    passed: bool = True


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("median of nothing")
    return float(s[n // 2]) if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def mad(xs: Sequence[float]) -> float:
    """Median absolute deviation from the median (unscaled)."""
    m = median(xs)
    return median([abs(x - m) for x in xs])


@dataclass(frozen=True)
class Baseline:
    median_ms: float
    mad_ms: float | None  # None with fewer than MAD_MIN_POINTS drills
    drills: int
    threshold_ms: float
    margin: str  # which term set the threshold: "mad", "relative" or "absolute"


def baseline(rtos: Sequence[int]) -> Baseline | None:
    """The robust baseline of recent passed RTOs (oldest first); None without any."""
    recent = list(rtos)[-BASELINE_WINDOW:]
    if not recent:
        return None
    m = median(recent)
    spread = mad(recent) if len(recent) >= MAD_MIN_POINTS else None
    margins = {
        "mad": K * MAD_SCALE * spread if spread is not None else 0.0,
        "relative": m * MIN_MARGIN_PCT / 100,
        "absolute": float(MIN_MARGIN_MS),
    }
    which = max(margins, key=lambda k: margins[k])
    return Baseline(m, spread, len(recent), m + margins[which], which)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(slope, intercept): the median of pairwise slopes, then the median of ``y - slope * x``.

    None when no two points have different x (no slope is defined).
    """
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    ]
    if not slopes:
        return None
    slope = median(slopes)
    return slope, median([y - slope * x for x, y in zip(xs, ys, strict=True)])


@dataclass(frozen=True)
class MannKendall:
    s: int  # concordant minus discordant pairs
    p_value: float  # two-sided
    method: str  # "exact" or "normal"


def _mahonian(n: int) -> list[int]:
    """Number of permutations of n items with k inversions, for every k (OEIS A008302)."""
    row = [1]
    for m in range(2, n + 1):
        nxt = [0] * (len(row) + m - 1)
        for k, c in enumerate(row):
            for j in range(m):
                nxt[k + j] += c
        row = nxt
    return row


def mann_kendall(ys: Sequence[float]) -> MannKendall:
    """The Mann-Kendall test of ``ys`` in time order."""
    n = len(ys)
    pairs = [(ys[j] > ys[i]) - (ys[j] < ys[i]) for i in range(n) for j in range(i + 1, n)]
    s = sum(pairs)
    ties: dict[float, int] = {}
    for y in ys:
        ties[y] = ties.get(y, 0) + 1
    if s == 0:
        return MannKendall(0, 1.0, "exact" if all(t == 1 for t in ties.values()) else "normal")
    if n <= EXACT_MAX_N and all(t == 1 for t in ties.values()):
        inversions = (len(pairs) - abs(s)) // 2  # discordant pairs of the series or of its mirror
        counts = _mahonian(n)
        tail = sum(counts[: inversions + 1]) / math.factorial(n)
        return MannKendall(s, min(1.0, 2 * tail), "exact")
    var = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties.values())) / 18
    z = (s - 1 if s > 0 else s + 1) / math.sqrt(var)
    return MannKendall(s, math.erfc(abs(z) / math.sqrt(2)), "normal")


def _days(points: Sequence[Point]) -> list[float]:
    t0 = points[0].at
    return [(p.at - t0).total_seconds() / 86400 for p in points]


def _p(p: float) -> str:
    return f"{p:.4g}"


def trend(points: Sequence[Point]) -> dict[str, Any]:
    """Is the RTO drifting over time? Mann-Kendall for "whether", Theil-Sen for "how fast"."""
    pts = sorted(points, key=lambda p: p.at)[-TREND_WINDOW:]
    if len(pts) < TREND_MIN_POINTS:
        return {
            "direction": None,
            "drills": len(pts),
            "reason": f"{len(pts)} drill(s) with a measured RTO; a trend needs {TREND_MIN_POINTS}",
        }
    ys = [float(p.rto_ms) for p in pts]
    mk = mann_kendall(ys)
    fit = theil_sen(_days(pts), ys)
    slope = fit[0] if fit else 0.0
    significant = mk.p_value < TREND_ALPHA and slope != 0
    return {
        "direction": ("increasing" if slope > 0 else "decreasing") if significant else "none",
        "drills": len(pts),
        "slope_ms_per_day": round(slope),
        "mann_kendall_s": mk.s,
        "p_value": _p(mk.p_value),
        "method": mk.method,
        "alpha": _p(TREND_ALPHA),
    }


def _hours(ms: int) -> str:
    s = ms / 1000
    if s >= 3600:
        return f"{s / 3600:g}h"
    return f"{s / 60:g}min" if s >= 60 else f"{s:g}s"


def project(points: Sequence[Point], objective_ms: int) -> dict[str, Any]:
    """When does the RTO reach its objective if the restored size keeps growing as it has?"""
    pts = sorted((p for p in points if p.restored_bytes is not None), key=lambda p: p.at)[-TREND_WINDOW:]
    if len(pts) < TREND_MIN_POINTS:
        return {"crosses_objective_at": None, "reason": f"{len(pts)} drill(s) with a restored size and an RTO; "
                f"a projection needs {TREND_MIN_POINTS}"}  # fmt: skip
    days = _days(pts)
    if days[-1] < PROJECTION_MIN_DAYS:
        return {"crosses_objective_at": None, "reason": f"history spans {days[-1]:.1f} days; "
                f"a projection needs {PROJECTION_MIN_DAYS}"}  # fmt: skip
    sizes = [float(p.restored_bytes or 0) for p in pts]
    growth_fit = theil_sen(days, sizes)
    growth_mk = mann_kendall(sizes)
    out: dict[str, Any] = {
        "drills": len(pts),
        "growth_bytes_per_day": round(growth_fit[0]) if growth_fit else 0,
        "growth_p_value": _p(growth_mk.p_value),
        "crosses_objective_at": None,
    }
    if growth_fit is None or growth_fit[0] <= 0 or growth_mk.s <= 0 or growth_mk.p_value >= TREND_ALPHA:
        return out | {"reason": "the restored size is not growing significantly"}
    cost = theil_sen([s / GB for s in sizes], [float(p.rto_ms) for p in pts])
    if cost is None or cost[0] <= 0:
        return out | {"reason": "the RTO does not grow with the restored size"}
    ms_per_gb, fixed_ms = cost
    out |= {"fixed_ms": round(fixed_ms), "marginal_ms_per_gb": round(ms_per_gb)}
    size_now = growth_fit[1] + growth_fit[0] * days[-1]  # on the fitted line, not the last (noisy) point
    size_at_objective = (objective_ms - fixed_ms) / ms_per_gb * GB
    wait_days = max(0.0, (size_at_objective - size_now) / growth_fit[0])
    per_month = f"+{growth_fit[0] * DAYS_PER_MONTH / GB:.1f} GB/month"
    if wait_days > PROJECTION_HORIZON_DAYS:
        return out | {"reason": f"at {per_month}, the {_hours(objective_ms)} objective is more than 10 years away"}
    when = (pts[-1].at + timedelta(days=wait_days)).date()
    verb = "reaches" if wait_days > 0 else "has reached"
    return out | {
        "crosses_objective_at": when.isoformat(),
        "summary": f"at {per_month}, RTO {verb} the {_hours(objective_ms)} objective around {when:%Y-%m}",
    }


def restored_bytes(predicate: dict[str, Any]) -> int | None:
    """The restored size a record carries: today the backup's size as preflight measured it.

    Local engines record ``recovery_point.base_backup.size_bytes`` (PostgreSQL PITR),
    ``recovery_point.backup.size_bytes`` (MariaDB PITR) or ``recovery_point.size_bytes`` (dumps);
    ``results.restored_bytes`` wins when a backend reports the restored database's own size.
    """
    rp = predicate.get("recovery_point") or {}
    candidates = [
        (predicate.get("results") or {}).get("restored_bytes"),
        (rp.get("base_backup") or {}).get("size_bytes") if isinstance(rp.get("base_backup"), dict) else None,
        (rp.get("backup") or {}).get("size_bytes") if isinstance(rp.get("backup"), dict) else None,
        rp.get("size_bytes"),
    ]
    for c in candidates:
        if isinstance(c, int) and not isinstance(c, bool) and c > 0:
            return c
    return None


def regression_record(past: Sequence[Point], current: Point, objective_ms: int | None) -> dict[str, Any] | None:
    """The ``regression`` field of a record: the current drill against its runbook's history.

    ``past`` holds earlier drills with a measured RTO, oldest first; only passed ones make the
    baseline, but every measured RTO (an objective missed included) makes the trend: leaving
    out the slow drills would hide the very drift the trend is for. None without a baseline.
    """
    base = baseline([p.rto_ms for p in past if p.passed])
    if base is None:
        return None
    series = [*past, current]
    delta_pct = round((current.rto_ms - base.median_ms) * 100 / base.median_ms) if base.median_ms else 0
    per_gb = (
        {"restored_bytes": current.restored_bytes, "rto_ms_per_gb": round(current.rto_ms * GB / current.restored_bytes)}
        if current.restored_bytes
        else None
    )
    return {
        "baseline_rto_ms": round(base.median_ms),
        "baseline_drills": base.drills,
        "mad_ms": round(base.mad_ms) if base.mad_ms is not None else None,
        "threshold_ms": math.floor(base.threshold_ms),
        "threshold_margin": base.margin,
        "delta_pct": delta_pct,
        "flag": current.rto_ms > base.threshold_ms,
        "rule": f"RTO above the median of the last {BASELINE_WINDOW} passed drills plus the largest of "
        f"{K:g} x 1.4826 x MAD, {MIN_MARGIN_PCT} % of the median and {MIN_MARGIN_MS} ms",
        "trend": trend(series),
        "per_gb": per_gb,
        "projection": project(series, objective_ms) if objective_ms else None,
    }
