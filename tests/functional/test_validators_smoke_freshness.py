"""Smoke queries (with the target_time parameter) and freshness against real servers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from servers import ShopReader

from validators.base import ValidationReport
from validators.config import FreshnessConfig, SmokeQuery, ValidatorsConfig
from validators.endpoint import Endpoint
from validators.runner import run_validators

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _report(ep: Endpoint, **cfg: Any) -> ValidationReport:
    """The report without its first finding, which must say the session is read-only."""
    params = cfg.pop("params", {})
    report = run_validators(ep, ValidatorsConfig(**cfg), params=params, baseline=None)
    session = report.findings[0]
    assert (session.validator, session.passed) == ("session", True), session
    return dataclasses.replace(report, findings=report.findings[1:])


def test_smoke_with_target_time(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    # 01:40 UTC given as 03:40+02:00: the driver must see the same instant on both engines
    target = (T0 + dt.timedelta(minutes=100)).astimezone(dt.timezone(dt.timedelta(hours=2)))
    smoke = (
        SmokeQuery(
            name="orders up to target",
            sql="select count(*) from orders where updated_at <= %(target_time)s",
            expect=100,
        ),
        SmokeQuery(
            name="nothing after target",
            sql="select count(*) from orders where updated_at > %(target_time)s",
            expect=0,
            op=">",
        ),
        SmokeQuery(
            name="like needs no escaping", sql="select count(*) from customers where email like 'c1%'", expect=11
        ),
        SmokeQuery(name="bool", sql="select count(*) > 0 from orders", expect=True),
        SmokeQuery(name="sum", sql="select sum(total) from orders", expect=20100),
        SmokeQuery(
            name="max ts", sql="select max(updated_at) from orders", expect="2024-01-01T03:20:00+00:00", op=">="
        ),
        SmokeQuery(name="wrong", sql="select count(*) from customers", expect=51),
    )
    report = _report(ep, smoke=smoke, params={"target_time": target})
    by = {f.check: f for f in report.findings}
    assert [f.check for f in report.findings] == [q.name for q in smoke]
    assert by["orders up to target"].passed and by["orders up to target"].actual == 100
    assert by["nothing after target"].passed  # 100 rows after target, op ">" 0
    assert by["like needs no escaping"].passed, by["like needs no escaping"]
    assert by["bool"].passed
    assert by["sum"].passed, by["sum"]
    assert by["max ts"].passed, by["max ts"]
    wrong = by["wrong"]
    assert not wrong.passed and wrong.actual == 50 and wrong.expected == "== 51" and "got 50" in wrong.detail
    import hashlib

    assert wrong.query_sha256 == hashlib.sha256(b"select count(*) from customers").hexdigest()


def test_freshness_newest_timestamp(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    report = _report(ep, freshness=FreshnessConfig(column="orders.updated_at"))
    (f,) = report.findings
    assert f.passed and report.newest_commit_at == "2024-01-01T03:20:00Z"
    assert report.freshness_method == "column"
    schema = "public" if ep.engine == "postgres" else ep.database
    qualified = _report(ep, freshness=FreshnessConfig(column=f"{schema}.orders.updated_at"))
    assert qualified.newest_commit_at == "2024-01-01T03:20:00Z"


def test_freshness_after_target_fails(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    report = _report(
        ep, freshness=FreshnessConfig(column="orders.updated_at"), params={"target_time": T0 + dt.timedelta(hours=1)}
    )
    (f,) = report.findings
    assert not f.passed and "after the target time" in f.detail
    assert report.newest_commit_at == "2024-01-01T03:20:00Z"  # still reported for RPO


def test_freshness_empty_table(shop_reader: ShopReader) -> None:
    server, _, ep = shop_reader
    server.run("create table events (at timestamp)", database=ep.database)
    report = _report(ep, freshness=FreshnessConfig(column="events.at"))
    assert not report.findings[0].passed and "empty" in report.findings[0].detail
    assert report.newest_commit_at is None


def test_replay_timestamp(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    report = _report(ep, freshness=FreshnessConfig(method="replay_timestamp"))
    (f,) = report.findings
    assert not f.passed  # a primary that never replayed WAL / MySQL has no such function
    assert ("replayed no transaction" if ep.engine == "postgres" else "not available on mysql") in f.detail
    assert report.freshness_method == "replay_timestamp"


@pytest.mark.parametrize("sql", ["select count(*) from nowhere", "select 1/0"])
def test_broken_smoke_query_is_a_finding(shop_reader: ShopReader, sql: str) -> None:
    _, _, ep = shop_reader
    report = _report(
        ep, smoke=(SmokeQuery(name="broken", sql=sql, expect=1), SmokeQuery(name="ok", sql="select 1", expect=1))
    )
    by = {f.check: f for f in report.findings}
    assert by["ok"].passed
    if ep.engine == "mysql" and "1/0" in sql:
        assert not by["broken"].passed  # MariaDB returns NULL for 1/0
    else:
        broken = by["broken"]
        assert not broken.passed
        assert any(w in broken.detail for w in ("does not exist", "doesn't exist", "division by zero"))
        assert broken.expected == "== 1" and broken.query_sha256 and broken.duration_ms is not None
