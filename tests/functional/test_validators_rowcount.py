"""Row count rules against real servers: each rule passes and fails when it should."""

from __future__ import annotations

from typing import Any

import pytest
from servers import ShopReader

from validators.base import Finding
from validators.baseline import capture_baseline
from validators.config import RowCountRule, ValidatorsConfig
from validators.endpoint import Endpoint
from validators.runner import run_validators


def _run(
    ep: Endpoint, rules: dict[str, dict[str, Any]], baseline: dict[str, Any] | None = None
) -> tuple[dict[str, Finding], list[Finding]]:
    cfg = ValidatorsConfig(row_counts={t: RowCountRule(**r) for t, r in rules.items()}, parallelism=3)
    report = run_validators(ep, cfg, params={}, baseline=baseline)
    session, *counts = report.findings
    assert (session.validator, session.passed) == ("session", True), session
    return {f.check: f for f in counts}, counts


@pytest.mark.parametrize(
    ("rule", "passes"),
    [
        ({"equals": 200}, True),
        ({"equals": 199}, False),
        ({"min": 200}, True),
        ({"min": 201}, False),
        ({"max": 200}, True),
        ({"max": 150}, False),
        ({"min": 100, "max": 300}, True),
        ({"min": 100, "max": 150}, False),
    ],
)
def test_absolute_rules(shop_reader: ShopReader, rule: dict[str, int], passes: bool) -> None:
    _, _, ep = shop_reader
    by, _ = _run(ep, {"orders": rule})
    f = by["orders rows"]
    assert f.passed is passes, f
    assert f.actual == 200
    assert f.expected == rule
    assert f.query_sha256 and len(f.query_sha256) == 64
    assert f.duration_ms is not None


def test_baseline_rules_and_qualified_names(shop_reader: ShopReader) -> None:
    server, admin, ep = shop_reader
    baseline = capture_baseline(admin)
    schema = "public" if ep.engine == "postgres" else ep.database
    assert baseline["row_counts"] == {f"{schema}.customers": 50, f"{schema}.orders": 200}
    server.run("delete from orders where id <= 10", database=ep.database)  # 190 rows: 5 % below baseline
    by, counts = _run(
        ep,
        {
            "orders": {"within_pct": 10},
            f"{schema}.orders": {"within_pct": 1},
            "customers": {"equals_baseline": True},
        },
        baseline,
    )
    assert by["orders rows"].passed and by["orders rows"].expected["baseline"] == 200
    strict = by[f"{schema}.orders rows"]
    assert not strict.passed and "5.00% away from the baseline 200" in strict.detail
    assert by["customers rows"].passed
    by, _ = _run(ep, {"orders": {"equals_baseline": True}}, baseline)
    assert not by["orders rows"].passed and by["orders rows"].actual == 190
    # the order of findings is the runbook's, whatever order the counts ran in
    assert [f.check for f in counts] == ["orders rows", f"{schema}.orders rows", "customers rows"]


def test_baseline_rule_without_baseline_fails_clearly(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    by, _ = _run(ep, {"orders": {"equals_baseline": True}})
    assert not by["orders rows"].passed
    assert "no count" in by["orders rows"].detail


def test_missing_table_is_a_failed_finding_not_an_exception(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    by, _ = _run(ep, {"no_such_table": {"min": 0}, "orders": {"min": 1}, 'we"ird`name': {"min": 0}})
    assert not by["no_such_table rows"].passed
    assert "no_such_table" in by["no_such_table rows"].detail
    assert not by['we"ird`name rows'].passed  # quoted, not injected
    assert by["orders rows"].passed
