"""RTO regression against recent drills: pure arithmetic over past records."""

from __future__ import annotations

from drills.history import PastDrill, chain_link, regression


def past(rtos: list[int | None], verdict: str = "passed") -> list[PastDrill]:
    return [PastDrill(f"r{i}", f"2026-01-0{i + 1}", verdict, rto, i + 1, f"{i:064x}") for i, rto in enumerate(rtos)]


def test_no_history_no_regression() -> None:
    assert regression([], 1000) is None
    assert regression(past([1000]), None) is None


def test_slower_than_the_recent_median_by_more_than_20_percent_is_flagged() -> None:
    history = past([1000, 1100, 900, 1000, 1050])
    assert regression(history, 1150)["flag"] is False  # type: ignore[index]
    r = regression(history, 1300)
    assert r is not None and r["flag"] is True and r["delta_pct"] == 30 and r["baseline_rto_ms"] == 1000


def test_only_the_last_five_passed_drills_count() -> None:
    history = past([100, 100, 100, 2000, 2000, 2000, 2000, 2000]) + past([1], verdict="failed")
    r = regression(history, 2100)
    assert r is not None and r["baseline_rto_ms"] == 2000 and r["baseline_drills"] == 5 and not r["flag"]


def test_chain_link_counts_on_from_the_last_record() -> None:
    link = chain_link(past([1, 2, 3]), "orders")
    assert link["chain"] == {"id": "runbook:orders", "seq": 4, "prev_envelope_sha256": f"{2:064x}"}
    assert chain_link([], "orders")["chain"]["seq"] == 1
