"""Row counts: exact ``count(*)`` per table, checked against rules.

Counts are exact on purpose: a restore that lost the last hour of orders is
exactly the kind of problem a statistics-based estimate hides. Rule
evaluation (:func:`evaluate`) is pure so it is unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from validators.base import Finding
from validators.config import RowCountRule
from validators.dbapi import Connection, fetch_one, sha256_text
from validators.dialects import Dialect, count_sql

__all__ = ["baseline_count", "count_rows", "evaluate", "finding_for"]

VALIDATOR = "row_counts"


def count_rows(conn: Connection, dialect: Dialect, table: str) -> tuple[int, str]:
    """``(rows, sql)`` for ``table`` (``"t"`` or ``"schema.t"``)."""
    sql = count_sql(dialect, table)
    row = fetch_one(conn, sql)
    return (int(row[0]) if row else 0), sql


def baseline_count(counts: Mapping[str, int], table: str, default_schema: str | None) -> int | None:
    """The baseline count of ``table``; unqualified names resolve like the server does.

    Baselines are keyed by qualified name (``public.orders``); a runbook
    may say ``orders``. Try the exact name, then the default schema, then a
    unique ``*.orders``.
    """
    if table in counts:
        return int(counts[table])
    if "." in table:
        return None
    if default_schema and f"{default_schema}.{table}" in counts:
        return int(counts[f"{default_schema}.{table}"])
    matches = [n for k, n in counts.items() if k.split(".", 1)[-1] == table]
    return int(matches[0]) if len(matches) == 1 else None


def _absolute(rule: RowCountRule, actual: int, expected: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if rule.equals is not None:
        expected["equals"] = rule.equals
        if actual != rule.equals:
            problems.append(f"expected exactly {rule.equals}")
    if rule.min is not None:
        expected["min"] = rule.min
        if actual < rule.min:
            problems.append(f"expected at least {rule.min}")
    if rule.max is not None:
        expected["max"] = rule.max
        if actual > rule.max:
            problems.append(f"expected at most {rule.max}")
    return problems


def _relative(rule: RowCountRule, actual: int, baseline: int | None, expected: dict[str, Any]) -> list[str]:
    if not rule.equals_baseline and rule.within_pct is None:
        return []
    expected["baseline"] = baseline
    if baseline is None:
        return ["the baseline has no count for this table"]
    problems: list[str] = []
    if rule.equals_baseline:
        expected["equals_baseline"] = True
        if actual != baseline:
            problems.append(f"expected the baseline count {baseline}")
    if rule.within_pct is not None:
        expected["within_pct"] = rule.within_pct
        if abs(actual - baseline) > baseline * rule.within_pct / 100:
            off = abs(actual - baseline) * 100 / baseline if baseline else float("inf")
            problems.append(f"{off:.2f}% away from the baseline {baseline}, allowed {rule.within_pct}%")
    return problems


def evaluate(table: str, rule: RowCountRule, actual: int, baseline: int | None) -> Finding:
    """One finding for ``table``: every rule given must hold."""
    expected: dict[str, Any] = {}
    problems = _absolute(rule, actual, expected) + _relative(rule, actual, baseline, expected)
    detail = f"{actual} rows: " + "; ".join(problems) if problems else f"{actual} rows"
    return Finding(VALIDATOR, f"{table} rows", not problems, expected=expected, actual=actual, detail=detail)


def finding_for(
    conn: Connection,
    dialect: Dialect,
    table: str,
    *,
    rule: RowCountRule,
    baseline_counts: Mapping[str, int] | None,
    default_schema: str | None,
) -> Finding:
    """Count ``table`` and evaluate ``rule``; the finding carries the count query's digest."""
    actual, sql = count_rows(conn, dialect, table)
    base = baseline_count(baseline_counts, table, default_schema) if baseline_counts is not None else None
    return replace(evaluate(table, rule, actual, base), query_sha256=sha256_text(sql))
