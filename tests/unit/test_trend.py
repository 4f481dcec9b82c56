"""RTO statistics on synthetic histories whose answers were worked out by hand (in the comments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drills.evidence import (
    canonical_json,
    generate_keypair,
    load_signer,
    load_verifiers,
    subject_for_bytes,
    write_evidence,
)
from drills.history import PastDrill, past_drills
from drills.history import regression as history_regression
from drills.trend import (
    Point,
    baseline,
    mad,
    mann_kendall,
    median,
    project,
    regression_record,
    restored_bytes,
    theil_sen,
    trend,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GB = 1_000_000_000


def series(rtos: list[int], *, every_days: float = 1, sizes: list[int] | None = None) -> list[Point]:
    return [Point(T0 + timedelta(days=i * every_days), rto, sizes[i] if sizes else None) for i, rto in enumerate(rtos)]


def test_median_and_mad_by_hand() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    # deviations from 1000: 0, 100, 100, 0, 50 -> sorted 0, 0, 50, 100, 100 -> 50
    assert mad([1000, 1100, 900, 1000, 1050]) == 50


def test_identical_history_does_not_flag_noise() -> None:
    # MAD 0: the floors decide, max(10 % of 60 s, 1 s) = 6 s
    b = baseline([60_000] * 8)
    assert b is not None and b.mad_ms == 0 and b.threshold_ms == 66_000 and b.margin == "relative"
    small = baseline([1_500] * 8)  # a 1.5 s local drill: 10 % is 150 ms, so the 1 s floor applies
    assert small is not None and small.threshold_ms == 2_500 and small.margin == "absolute"


def test_fewer_than_three_drills_have_no_mad_only_floors() -> None:
    b = baseline([100_000, 300_000])
    assert b is not None and b.mad_ms is None and b.median_ms == 200_000 and b.threshold_ms == 220_000
    assert baseline([]) is None


def test_one_outlier_in_the_baseline_does_not_move_it() -> None:
    # a mean would be (9 x 100 s + 10 000 s) / 10 = 1090 s; the median stays 100 s, the MAD 0
    b = baseline([100_000] * 9 + [10_000_000])
    assert b is not None and b.median_ms == 100_000 and b.mad_ms == 0 and b.threshold_ms == 110_000


def test_theil_sen_on_a_perfect_line() -> None:
    assert theil_sen([0, 1, 2, 3], [5, 7, 9, 11]) == (2, 5)
    assert theil_sen([1, 1, 1], [1, 2, 3]) is None  # no two distinct x: no slope


def test_theil_sen_ignores_one_outlier() -> None:
    # y = 1000 + 100 x on x = 0..9, y[5] replaced by 10 000. Of the 45 pairwise slopes, 36 avoid
    # point 5 (all 100), 5 come from the left of it (large positive), 4 from the right (negative):
    # sorted, the 23rd is 100. Intercept: median of y - 100x = nine 1000s and 9500 -> 1000.
    ys = [1000 + 100 * x for x in range(10)]
    ys[5] = 10_000
    assert theil_sen(list(range(10)), ys) == (100, 1000)


def test_mann_kendall_exact_p_values_by_hand() -> None:
    # strictly increasing, n = 5: S = 10, only 1 of 5! = 120 orderings is as extreme: p = 2/120
    mk = mann_kendall([1, 2, 3, 4, 5])
    assert (mk.s, mk.method) == (10, "exact") and mk.p_value == pytest.approx(2 / 120)
    assert mann_kendall([5, 4, 3, 2, 1]).s == -10 and mann_kendall([5, 4, 3, 2, 1]).p_value == pytest.approx(2 / 120)
    # the outlier series above: 4 discordant pairs, S = 45 - 8 = 37; permutations of 10 with at most
    # 4 inversions (Mahonian numbers 1, 9, 44, 155, 440) = 649 of 3 628 800: p = 2 x 649 / 10!
    ys = [1000 + 100 * x for x in range(10)]
    ys[5] = 10_000
    mk = mann_kendall(ys)
    assert mk.s == 37 and mk.p_value == pytest.approx(1298 / 3_628_800)


def test_mann_kendall_with_ties_uses_the_corrected_normal_approximation() -> None:
    # 1 1 2 2 3 3: 15 pairs, 3 tied, 12 concordant: S = 12. Var = (6*5*17 - 3*(2*1*9)) / 18 = 25.333;
    # Z = (12 - 1) / 5.0332 = 2.1855; two-sided p = 2 (1 - Phi(2.1855)) = 0.0288 (normal table)
    mk = mann_kendall([1, 1, 2, 2, 3, 3])
    assert mk.s == 12 and mk.method == "normal" and mk.p_value == pytest.approx(0.0288, abs=5e-4)
    flat = mann_kendall([7, 7, 7, 7, 7, 7])
    assert flat.s == 0 and flat.p_value == 1


def test_linear_series_has_an_increasing_trend_with_its_slope() -> None:
    t = trend(series([60_000 + 5_000 * i for i in range(6)], every_days=7))  # +5 s a week
    # slope 5000 ms / 7 days = 714.29 ms/day; S = 15, p = 2/720 exact
    assert t["direction"] == "increasing" and t["slope_ms_per_day"] == 714 and t["mann_kendall_s"] == 15
    assert t["p_value"] == "0.002778" and t["method"] == "exact"


def test_flat_series_has_no_trend() -> None:
    t = trend(series([60_000] * 12))
    assert t["direction"] == "none" and t["slope_ms_per_day"] == 0 and t["p_value"] == "1"


def test_random_looking_series_is_not_a_trend() -> None:
    # 3 1 4 1 5 9 2 6 5 3: per first element 2 + 7 + 1 + 6 + 0 - 4 + 3 - 2 - 1 = S = 12; three pairs of
    # ties: Var = (10*9*25 - 3*18) / 18 = 122, Z = 11 / 11.045 = 0.996, p = 0.319: no trend
    t = trend(series([3_000, 1_000, 4_000, 1_000, 5_000, 9_000, 2_000, 6_000, 5_000, 3_000]))
    assert (
        t["direction"] == "none" and t["mann_kendall_s"] == 12 and float(t["p_value"]) == pytest.approx(0.319, abs=1e-3)
    )


def test_too_few_points_says_so() -> None:
    t = trend(series([1_000, 2_000, 3_000, 4_000]))
    assert t["direction"] is None and "4 drill(s)" in t["reason"] and "needs 5" in t["reason"]
    p = project(series([1, 2, 3], sizes=[1, 2, 3]), 10_000)
    assert p["crosses_objective_at"] is None and "needs 5" in p["reason"]


def test_projection_from_size_growth_by_hand() -> None:
    # 1 GB every 10 days (0.1 GB/day = 3.04 GB/month), RTO = 60 s + 100 s per GB.
    # 4 h = 14 400 000 ms is reached at (14 400 000 - 60 000) / 100 000 = 143.4 GB; at day 50 the
    # size is 15 GB, so (143.4 - 15) / 0.1 = 1284 days later: day 1334 from 2026-01-01 = 2029-08-27
    gbs = [10, 11, 12, 13, 14, 15]
    pts = series([60_000 + 100_000 * g for g in gbs], every_days=10, sizes=[g * GB for g in gbs])
    p = project(pts, 4 * 3600 * 1000)
    assert p["crosses_objective_at"] == "2029-08-27"
    assert p["summary"] == "at +3.0 GB/month, RTO reaches the 4h objective around 2029-08"
    assert p["growth_bytes_per_day"] == 100_000_000
    assert (p["fixed_ms"], p["marginal_ms_per_gb"]) == (60_000, 100_000)


def test_projection_ignores_one_wild_drill() -> None:
    gbs = [10, 11, 12, 13, 14, 15, 16]
    rtos = [60_000 + 100_000 * g for g in gbs]
    rtos[3] = 9_000_000  # one night the restore crawled
    p = project(series(rtos, every_days=10, sizes=[g * GB for g in gbs]), 4 * 3600 * 1000)
    # the fit is the same line as above; day 60 at 16 GB: (143.4 - 16) / 0.1 = 1274 days -> day 1334
    assert p["crosses_objective_at"] == "2029-08-27" and p["marginal_ms_per_gb"] == 100_000


def test_objective_already_reached_is_said_plainly() -> None:
    gbs = [10, 11, 12, 13, 14, 15]
    pts = series([100_000 * g for g in gbs], every_days=10, sizes=[g * GB for g in gbs])
    p = project(pts, 1_200_000)  # 12 GB worth: crossed before the last drill
    assert p["crosses_objective_at"] == "2026-02-20"  # day 50, the last drill
    assert "has reached the 20min objective" in p["summary"]


def test_flat_size_or_short_history_gives_no_projection() -> None:
    flat = project(series([60_000] * 8, every_days=7, sizes=[5 * GB] * 8), 3_600_000)
    assert flat["crosses_objective_at"] is None and "not growing" in flat["reason"]
    quick = project(series([60_000 + i for i in range(8)], every_days=0.1, sizes=[i * GB for i in range(1, 9)]), 1)
    assert quick["crosses_objective_at"] is None and "spans 0.7 days" in quick["reason"]
    far = project(series([60_000] * 8, every_days=30, sizes=[(100 + i) * GB for i in range(8)]), 3_600_000)
    assert far["crosses_objective_at"] is None and "RTO does not grow" in far["reason"]


def test_regression_record_puts_it_together() -> None:
    gbs = [10, 11, 12, 13, 14, 15]
    past = series([60_000 + 100_000 * g for g in gbs], every_days=10, sizes=[g * GB for g in gbs])
    now = Point(T0 + timedelta(days=60), 2_000_000, 16 * GB)  # 2000 s where the line says 1660 s
    r = regression_record(past, now, 4 * 3600 * 1000)
    assert r is not None
    # median of 1060..1560 s = (1260 + 1360) / 2 = 1310 s; deviations 250 150 50 50 150 250 s -> MAD 150 s;
    # 3 x 1.4826 x 150 s = 667.17 s: threshold 1977.17 s
    assert (r["baseline_rto_ms"], r["mad_ms"], r["threshold_ms"]) == (1_310_000, 150_000, 1_977_170)
    assert r["flag"] is True and r["delta_pct"] == 53  # 2000 / 1310 = 1.5267
    assert r["per_gb"] == {"restored_bytes": 16 * GB, "rto_ms_per_gb": 125_000}
    assert r["trend"]["direction"] == "increasing"
    assert r["projection"]["crosses_objective_at"] is not None
    assert regression_record([], now, 1000) is None
    canonical_json(r)  # integers and strings only: RFC 8785 evidence cannot hold floats
    assert not [v for v in _leaves(r) if isinstance(v, float)]


def _leaves(x: object) -> list[object]:
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    return [x]


def test_restored_bytes_from_each_engine_s_record() -> None:
    assert restored_bytes({"recovery_point": {"base_backup": {"size_bytes": 123}}}) == 123
    assert restored_bytes({"recovery_point": {"backup": {"size_bytes": 45}}}) == 45
    assert restored_bytes({"recovery_point": {"kind": "dump", "size_bytes": 6}}) == 6
    assert restored_bytes({"results": {"restored_bytes": 7}, "recovery_point": {"size_bytes": 6}}) == 7
    assert restored_bytes({"recovery_point": None}) is None
    assert restored_bytes({"recovery_point": {"size_bytes": True}}) is None


def test_history_regression_reads_the_current_record_and_past_sizes(tmp_path: Path) -> None:
    """The wiring: history.regression fills the record's field from PastDrill rows and the predicate."""
    gbs = [10, 11, 12, 13, 14, 15]
    past = [
        PastDrill(
            f"r{i}", (T0 + timedelta(days=10 * i)).isoformat(), "passed", 60_000 + 100_000 * g, i + 1, "0" * 64, g * GB
        )
        for i, g in enumerate(gbs)
    ]
    predicate = {
        "drill": {"finished_at": "2026-03-02T00:00:00Z"},  # day 60
        "results": {"verdict": "passed", "rto_objective_ms": 4 * 3600 * 1000},
        "recovery_point": {"base_backup": {"size_bytes": 16 * GB}},
    }
    r = history_regression(past, 1_660_000, predicate)
    assert r is not None and r["flag"] is False and r["per_gb"]["rto_ms_per_gb"] == 103_750  # 1660 s / 16 GB
    assert r["trend"]["direction"] == "increasing" and r["trend"]["drills"] == 7
    assert r["projection"]["crosses_objective_at"] == "2029-08-27"  # the hand-computed line above
    assert history_regression(past, None, predicate) is None


def test_past_drills_carry_the_restored_size_of_their_record(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    pred = {"drill": {"id": "a", "finished_at": "2026-01-01T00:00:00Z"}, "runbook": {"name": "rb"},
            "results": {"verdict": "passed", "achieved_rto_ms": 5}, "recovery_point": {"size_bytes": 4242}}  # fmt: skip
    write_evidence(pred, [subject_for_bytes("rb", b"x")], tmp_path / "ev", "a", load_signer(tmp_path / "k.key"))
    (p,) = past_drills(tmp_path / "ev", "rb", load_verifiers(tmp_path / "k.pub"))  # only trusted records
    assert p.restored_bytes == 4242


def test_the_markdown_report_shows_trend_and_projection() -> None:
    from drills.report import render_markdown

    reg = {"delta_pct": 5, "baseline_rto_ms": 1000, "flag": False,
           "trend": {"direction": "increasing", "drills": 6, "p_value": "0.002778", "slope_ms_per_day": 714},
           "projection": {"summary": "at +3.0 GB/month, RTO reaches the 4h objective around 2029-08"}}  # fmt: skip
    record = {"drill": {"id": "r"}, "runbook": {"name": "rb"}, "results": {"verdict": "passed"}, "regression": reg}
    text = render_markdown({"predicate": record}, evidence_name="e")  # the report reads the typed record
    assert "Trend over 6 drills: increasing (Mann-Kendall p = 0.002778, Theil-Sen 714 ms/day)." in text
    assert "Projection: at +3.0 GB/month, RTO reaches the 4h objective around 2029-08." in text


def test_odd_old_records_are_skipped_not_fatal() -> None:
    odd = [
        PastDrill("a", "not a date", "passed", 1000, 1, "0" * 64),
        PastDrill("b", "2026-01-02T00:00:00Z", "passed", "1000", 2, "0" * 64),  # type: ignore[arg-type]
        PastDrill("c", "2026-01-03T00:00:00Z", "passed", True, 3, "0" * 64),  # a bool is no duration
        PastDrill("d", "2026-01-04T00:00:00Z", "passed", 60_000, 4, "0" * 64),
    ]
    r = history_regression(odd, 61_000, {"drill": {"finished_at": "2026-01-05T00:00:00Z"}})
    assert r is not None and r["baseline_drills"] == 1 and r["baseline_rto_ms"] == 60_000


def test_doctor_reads_the_projection_date_as_utc() -> None:
    """``crosses_objective_at`` is a date; doctor compares it with an aware 'now'."""
    from drills.doctor_facts import _projection

    at = _projection({"regression": {"projection": {"crosses_objective_at": "2029-08-27"}}})
    assert at == datetime(2029, 8, 27, tzinfo=UTC)
    assert at - datetime(2029, 8, 1, tzinfo=UTC) == timedelta(days=26)
