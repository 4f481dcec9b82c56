"""RTO regression against recent drills: pure arithmetic over past records."""

from __future__ import annotations

from drills.history import PastDrill, chain_link, regression


def past(rtos: list[int | None], verdict: str = "passed") -> list[PastDrill]:
    return [PastDrill(f"r{i}", f"2026-01-{i + 1:02d}", verdict, rto, i + 1, f"{i:064x}") for i, rto in enumerate(rtos)]


def test_no_history_no_regression() -> None:
    assert regression([], 1000) is None
    assert regression(past([1000]), None) is None


def test_slower_than_the_median_by_more_than_three_robust_sigmas_is_flagged() -> None:
    # median 100 s; MAD = median(0, 10, 10, 0, 5) s = 5 s; 3 x 1.4826 x 5 s = 22.239 s: threshold 122.239 s
    history = past([100_000, 110_000, 90_000, 100_000, 105_000])
    r = regression(history, 122_000)
    assert r is not None and r["flag"] is False and r["threshold_ms"] == 122_239 and r["mad_ms"] == 5_000
    r = regression(history, 123_000)
    assert r is not None and r["flag"] is True and r["delta_pct"] == 23 and r["baseline_rto_ms"] == 100_000


def test_only_the_last_ten_passed_drills_count() -> None:
    history = past([100, 100, 100] + [2000] * 10) + past([1], verdict="failed")
    r = regression(history, 2100)
    assert r is not None and r["baseline_rto_ms"] == 2000 and r["baseline_drills"] == 10 and not r["flag"]


def test_chain_link_counts_on_from_the_last_record() -> None:
    link = chain_link(past([1, 2, 3]), "orders")
    assert link["chain"] == {
        "id": "runbook:orders",
        "seq": 4,
        "prev_envelope_sha256": f"{2:064x}",
        "prev_head_sha256": None,
    }
    assert chain_link([], "orders")["chain"]["seq"] == 1
