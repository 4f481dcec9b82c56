"""Schema capture and drift detection against real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from servers import PgServer, Shop, ShopReader

from validators.base import Finding
from validators.baseline import capture_baseline
from validators.config import ValidatorsConfig
from validators.connect import connect
from validators.dialects import get_dialect
from validators.endpoint import Endpoint
from validators.runner import run_validators
from validators.schema import capture_catalog, compare, without_triggers


def _catalog(ep: Endpoint) -> dict[str, Any]:
    conn = connect(ep)
    try:
        return capture_catalog(conn, get_dialect(ep.engine))
    finally:
        conn.close()


def _checks(findings: Sequence[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_capture_describes_the_shop(shop: Shop) -> None:
    _, ep = shop
    cat = _catalog(ep)
    schema = "public" if ep.engine == "postgres" else ep.database
    orders = cat["tables"][f"{schema}.orders"]
    assert set(cat["tables"]) == {f"{schema}.customers", f"{schema}.orders"}
    assert orders["primary_key"] == ["id"]
    assert orders["columns"]["note"]["nullable"] is True
    assert orders["columns"]["total"]["nullable"] is False
    assert "orders_customer_idx" in orders["indexes"]
    (fk,) = orders["foreign_keys"].values()
    assert fk == {"columns": ["customer_id"], "references": f"{schema}.customers", "ref_columns": ["id"]}
    assert cat["tables"][f"{schema}.customers"]["unique"]  # email
    assert f"{schema}.big_orders" in cat["views"]
    assert any(name.startswith(f"{schema}.order_count") for name in cat["routines"])
    if ep.engine == "mysql":
        assert orders["columns"]["note"]["charset"] == "utf8mb4"
        assert "collation" in orders["columns"]["note"]
        assert orders["triggers"]["orders_note"] == {"timing": "BEFORE", "event": "INSERT"}
    else:
        assert cat["sequences"][f"{schema}.orders_id_seq"]["type"] == "bigint"
    json.dumps(cat)  # JSON-able as it is


def test_identical_schema_gives_one_passing_finding(shop: Shop) -> None:
    _, ep = shop
    findings = compare(_catalog(ep), _catalog(ep))
    assert len(findings) == 1
    assert findings[0].passed and findings[0].check == "schema matches baseline"
    assert findings[0].actual["tables"] == 2


def test_drift_is_reported_one_finding_per_difference(shop: Shop) -> None:
    server, ep = shop
    baseline = capture_baseline(ep)
    if ep.engine == "postgres":
        s = "public"
        server.run(
            "alter table orders drop column note",
            "alter table orders alter column total type numeric(12,2)",
            "drop index orders_total_idx",
            "create table extra (id int)",
            "alter table customers alter column created_at drop not null",
            database=ep.database,
        )
    else:
        s = ep.database
        server.run(
            "alter table orders drop column note",
            "alter table orders modify total decimal(12,2) not null",
            "alter table orders drop index orders_total_idx",
            "create table extra (id int)",
            "alter table customers modify created_at timestamp null default current_timestamp",
            "alter table customers modify email varchar(200) character set latin1 not null",
            database=ep.database,
        )
    findings = compare(baseline["schema"], _catalog(ep))
    by = _checks(findings)
    assert not any(f.passed for f in findings)
    assert by[f"column {s}.orders.note"].actual == "missing"
    assert by[f"column {s}.orders.total type"].expected in ("numeric(10,2)", "decimal(10,2)")
    assert by[f"column {s}.orders.total type"].actual in ("numeric(12,2)", "decimal(12,2)")
    assert by[f"index {s}.orders.orders_total_idx"].actual == "missing"
    assert by[f"table {s}.extra"].expected == "absent"
    assert by[f"column {s}.customers.created_at nullable"].actual is True
    if ep.engine == "mysql":
        assert by[f"column {s}.customers.email charset"].actual == "latin1"
    # names in `ignore` are left out, qualified or not
    ignored = compare(baseline["schema"], _catalog(ep), ignore=["extra", f"{s}.orders.note"])
    assert f"table {s}.extra" not in _checks(ignored)
    assert f"column {s}.orders.note" not in _checks(ignored)


def test_schemas_filter(pg_server: PgServer) -> None:
    ep = pg_server.new_database("schemas")
    pg_server.run(
        "create schema app", "create table app.t (id int)", "create table public.u (id int)", database=ep.database
    )
    conn = connect(ep)
    try:
        cat = capture_catalog(conn, get_dialect("postgres"), ["app"])
    finally:
        conn.close()
    assert cat["schemas"] == ["app"]
    assert list(cat["tables"]) == ["app.t"]


def test_the_read_only_role_reads_the_catalog_the_owner_reads(shop_reader: ShopReader) -> None:
    _, admin, reader = shop_reader
    as_owner, as_reader = _catalog(admin), _catalog(reader)
    assert len(as_owner["tables"]) == 2 and as_owner["views"] and as_owner["routines"]
    if reader.engine == "postgres":
        assert as_reader == as_owner
    else:
        # MySQL lists triggers only to holders of TRIGGER, which the reader must not hold
        assert as_owner["tables"][f"{reader.database}.orders"]["triggers"]
        assert as_reader == without_triggers(as_owner)


def test_triggers_the_reader_cannot_read_fail_the_schema_check_unless_ignored(shop_reader: ShopReader) -> None:
    server, admin, reader = shop_reader
    if reader.engine == "postgres":
        server.run(
            "create function keep() returns trigger language plpgsql as 'begin return new; end'",
            "create trigger orders_keep before insert on orders for each row execute function keep()",
            database=admin.database,
        )
    baseline = capture_baseline(admin)
    s = "public" if reader.engine == "postgres" else reader.database
    trigger = "orders_keep" if reader.engine == "postgres" else "orders_note"
    server.run(
        f"drop trigger {trigger}" + (" on orders" if reader.engine == "postgres" else ""), database=admin.database
    )

    def schema(ignore: list[str]) -> dict[str, Finding]:
        cfg = ValidatorsConfig.model_validate({"schema": {"baseline": "unused.json", "ignore": ignore}})
        report = run_validators(reader, cfg, params={}, baseline=baseline)
        assert report.findings[0].passed  # the session
        return _checks(report.findings[1:])

    found = schema([])
    if reader.engine == "postgres":  # PostgreSQL shows the reader every trigger: the lost one is caught
        assert found[f"trigger {s}.orders.{trigger}"].actual == "missing"
    else:  # the reader cannot tell; it says so, naming the baseline's triggers
        assert found["schema matches baseline"].passed
        unverified = found["triggers"]
        assert not unverified.passed and unverified.expected == [f"{s}.orders.{trigger}"]
        assert "TRIGGER privilege" in unverified.detail and "schema.ignore" in unverified.detail
    accepted = schema([trigger])
    assert list(accepted) == ["schema matches baseline"] and accepted["schema matches baseline"].passed
