"""Pure validator logic: rule evaluation, value comparison, catalog diffs, names, DSNs, laziness."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from validators.config import RowCountRule
from validators.dbapi import jsonable, redact
from validators.dialects import count_sql, get_dialect, max_sql, split_name
from validators.dsn import endpoint_from_dsn
from validators.errors import ValidatorError
from validators.freshness import to_utc
from validators.rowcount import baseline_count, evaluate
from validators.schema import compare, filter_catalog
from validators.smoke import matches


# ---------------------------------------------------------------- row count rules
@pytest.mark.parametrize(
    ("rule", "actual", "baseline", "passed"),
    [
        ({"equals": 5}, 5, None, True),
        ({"equals": 5}, 6, None, False),
        ({"min": 5}, 5, None, True),
        ({"min": 5}, 4, None, False),
        ({"max": 5}, 5, None, True),
        ({"max": 5}, 6, None, False),
        ({"within_pct": 10}, 110, 100, True),
        ({"within_pct": 10}, 111, 100, False),
        ({"within_pct": 10}, 90, 100, True),
        ({"within_pct": 10}, 89, 100, False),
        ({"within_pct": 10}, 0, 0, True),
        ({"within_pct": 10}, 1, 0, False),
        ({"within_pct": 10}, 1, None, False),
        ({"equals_baseline": True}, 7, 7, True),
        ({"equals_baseline": True}, 8, 7, False),
        ({"equals_baseline": True}, 7, None, False),
        ({"min": 1, "within_pct": 50}, 0, 0, False),
    ],
)
def test_rules(rule: dict[str, Any], actual: int, baseline: int | None, passed: bool) -> None:
    f = evaluate("t", RowCountRule(**rule), actual, baseline)
    assert f.passed is passed
    assert f.check == "t rows" and f.actual == actual
    assert (f.detail == f"{actual} rows") is passed


@pytest.mark.parametrize(
    ("actual", "baseline", "pct", "passed"),
    [
        (110, 100, 10, True),  # exactly +10 %: inclusive
        (90, 100, 10, True),  # exactly -10 %: symmetric
        (111, 100, 10, False),
        (89, 100, 10, False),
        (100, 100, 0, True),  # 0 %: only the same count
        (101, 100, 0, False),
        (0, 100, 100, True),  # -100 % is inside 100 %
        (201, 100, 100, False),
        (1_000_000_001, 1_000_000_000, 1e-7, True),  # 0.0000001 % of a billion is one row
        (1_000_000_002, 1_000_000_000, 1e-7, False),
        (3, 7, 57.14, False),  # 4 of 7 rows is 57.142857 %
        (3, 7, 57.15, True),
    ],
)
def test_within_pct_is_symmetric_and_inclusive(actual: int, baseline: int, pct: float, passed: bool) -> None:
    f = evaluate("t", RowCountRule(within_pct=pct), actual, baseline)
    assert f.passed is passed, f


def test_baseline_count_resolution() -> None:
    counts = {"public.orders": 3, "app.orders": 4, "public.items": 5, "app.only": 6}
    assert baseline_count(counts, "public.orders", None) == 3
    assert baseline_count(counts, "orders", "public") == 3
    assert baseline_count(counts, "orders", "app") == 4
    assert baseline_count(counts, "orders", None) is None  # ambiguous
    assert baseline_count(counts, "only", "public") == 6  # unique suffix
    assert baseline_count(counts, "x.orders", "public") is None


# ---------------------------------------------------------------- smoke comparisons
@pytest.mark.parametrize(
    ("actual", "op", "expect", "result"),
    [
        (Decimal("3"), "==", 3, True),
        (Decimal("2.5"), ">", 2, True),
        (1, "==", True, True),  # MySQL booleans
        (0, "==", False, True),
        ("42", "==", 42, True),
        (None, "==", None, True),
        (None, "!=", None, False),
        (5, "==", None, False),
        (dt.datetime(2024, 1, 1, 3, tzinfo=dt.UTC), ">=", "2024-01-01T04:00:00+01:00", True),
        (dt.datetime(2024, 1, 1, 3), "==", "2024-01-01T03:00:00Z", True),  # naive read as UTC
        (dt.date(2024, 1, 2), ">", "2024-01-01", True),
        ("abc", "!=", "abd", True),
        (7, "<", 8, True),
        (7, "<=", 6, False),
    ],
)
def test_matches(actual: Any, op: str, expect: Any, result: bool) -> None:
    assert matches(actual, op, expect) is result


def test_matches_refuses_to_order_null() -> None:
    with pytest.raises(TypeError):
        matches(None, "<", 1)


# ---------------------------------------------------------------- catalog diffs
def _cat(**tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = {"kind": "table", "primary_key": ["id"], "unique": {}, "foreign_keys": {}, "indexes": {}, "triggers": {}}
    return {
        "schemas": ["public"],
        "tables": {f"public.{n}": {**base, "columns": cols} for n, cols in tables.items()},
        "sequences": {},
        "views": {},
        "routines": {},
    }


def _col(typ: str = "int", nullable: bool = False, default: str | None = None) -> dict[str, Any]:
    return {"type": typ, "nullable": nullable, "default": default}


def test_compare_lists_every_difference() -> None:
    base = _cat(orders={"id": _col(), "note": _col("text", True), "total": _col("numeric(10,2)")}, gone={"id": _col()})
    act = _cat(orders={"id": _col(), "total": _col("numeric(12,2)", True)}, extra={"id": _col()})
    act["tables"]["public.orders"]["indexes"] = {"orders_total_idx": {"unique": False, "definition": "x"}}
    base["views"] = {"public.v": {"definition": "select 1"}}
    act["views"] = {"public.v": {"definition": "select 2"}}
    by = {f.check: f for f in compare(base, act)}
    assert set(by) == {
        "table public.gone",
        "table public.extra",
        "column public.orders.note",
        "column public.orders.total type",
        "column public.orders.total nullable",
        "index public.orders.orders_total_idx",
        "view public.v",
    }
    assert by["table public.gone"].actual == "missing" and by["table public.extra"].actual == "present"
    assert by["column public.orders.total type"].expected == "numeric(10,2)"
    assert not any(f.passed for f in by.values())
    json.dumps([f.to_dict() for f in by.values()])


def test_compare_identical_and_ignore() -> None:
    cat = _cat(orders={"id": _col()})
    (only,) = compare(cat, json.loads(json.dumps(cat)))
    assert only.passed and only.expected["tables"] == 1
    other = _cat(orders={"id": _col()}, scratch={"id": _col()})
    assert compare(cat, other, ignore=["scratch"])[0].passed
    assert compare(cat, other, ignore=["public.scratch"])[0].passed
    assert not compare(cat, other)[0].passed


def test_filter_catalog() -> None:
    cat = _cat(a={"id": _col()})
    cat["tables"]["app.b"] = cat["tables"]["public.a"]
    cat["schemas"] = ["app", "public"]
    out = filter_catalog(cat, ["app"])
    assert list(out["tables"]) == ["app.b"] and out["schemas"] == ["app"]
    assert filter_catalog(cat, None) is cat


# ---------------------------------------------------------------- names and quoting
def test_quoting_and_names() -> None:
    pg, my = get_dialect("postgres"), get_dialect("mysql")
    assert count_sql(pg, "public.orders") == 'select count(*) from "public"."orders"'
    assert count_sql(pg, 'we"ird') == 'select count(*) from "we""ird"'
    assert count_sql(my, "shop.orders") == "select count(*) from `shop`.`orders`"
    assert count_sql(my, "a`b") == "select count(*) from `a``b`"
    assert max_sql(my, "orders.updated_at") == "select max(`updated_at`) from `orders`"
    assert max_sql(pg, "s.t.c") == 'select max("c") from "s"."t"'
    for bad in ("", "a..b", "a.b.c"):
        with pytest.raises(ValueError, match="not a table name"):
            split_name(bad)
    with pytest.raises(ValueError, match="unsupported engine"):
        get_dialect("oracle")


# ---------------------------------------------------------------- values, secrets, DSNs
def test_jsonable() -> None:
    value = {"d": Decimal("1.50"), "i": Decimal("2"), "t": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "b": b"\x01"}
    assert jsonable(value) == {"d": 1.5, "i": 2, "t": "2024-01-01T00:00:00+00:00", "b": "01"}
    assert jsonable(float("nan")) == "nan" and jsonable([dt.timedelta(seconds=2)]) == [2.0]


def test_redact_and_to_utc() -> None:
    assert redact("auth failed for pw=hunter2", "hunter2") == "auth failed for pw=********"
    assert redact("nothing", None) == "nothing"
    assert to_utc("2024-01-01T02:00:00+02:00") == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert to_utc(dt.date(2024, 1, 1)) == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert to_utc(None) is None


def test_endpoint_from_dsn() -> None:
    ep = endpoint_from_dsn("postgresql://app:p%40ss@db.internal:6543/shop?sslmode=require", environ={})
    assert (ep.engine, ep.host, ep.port, ep.database, ep.user) == ("postgres", "db.internal", 6543, "shop", "app")
    assert ep.password is not None and ep.password.reveal() == "p@ss" and "p@ss" not in repr(ep)
    assert ep.options == {"sslmode": "require"}
    sock = endpoint_from_dsn("postgres:///shop?host=/run/postgresql", environ={"PGPASSWORD": "x"})
    assert sock.host == "/run/postgresql" and sock.user == "postgres" and sock.password is not None
    dsn = "mysql://root@localhost/shop?unix_socket=/run/mysqld/mysqld.sock"
    my = endpoint_from_dsn(dsn, environ={"MYSQL_PWD": "y"})
    assert (my.engine, my.port, my.unix_socket) == ("mysql", 3306, "/run/mysqld/mysqld.sock")
    assert my.password is not None and my.password.reveal() == "y"
    with pytest.raises(ValidatorError, match="unsupported URL scheme"):
        endpoint_from_dsn("oracle://x/y", environ={})
    with pytest.raises(ValidatorError, match="names no database"):
        endpoint_from_dsn("mysql://root@localhost", environ={})


def test_importing_validators_loads_no_driver() -> None:
    code = (
        "import sys, validators, validators.runner, validators.baseline, validators.schema\n"
        "from validators import run_validators, Finding, ValidatorsConfig, connect\n"
        "bad = [m for m in ('psycopg', 'pymysql') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
