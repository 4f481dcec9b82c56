"""The runner: checks in parallel, bounded connections, failures as findings, no secret anywhere."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import pytest
from servers import MariaDbServer, PgServer, ShopReader

from validators.baseline import capture_baseline
from validators.config import FreshnessConfig, RowCountRule, SmokeQuery, ValidatorsConfig
from validators.connect import connect, probe
from validators.errors import ValidatorError
from validators.pool import ConnectionPool, Task, run_tasks
from validators.runner import run_validators


def _sleep_sql(engine: str) -> str:
    return "select 0 from pg_sleep(0.5)" if engine == "postgres" else "select sleep(0.5)"


def test_checks_run_in_parallel(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    smoke = tuple(SmokeQuery(name=f"sleep {i}", sql=_sleep_sql(ep.engine), expect=0) for i in range(3))
    cfg = ValidatorsConfig(smoke=smoke, row_counts={"orders": RowCountRule(min=1)}, parallelism=4)
    report = run_validators(ep, cfg, params={}, baseline=None)
    assert report.passed, report.findings
    durations = [f.duration_ms or 0 for f in report.findings if f.validator == "smoke"]
    assert all(d >= 450 for d in durations), durations
    assert sum(durations) >= 1400
    assert report.duration_ms < 1200, (report.duration_ms, durations)


def test_parallelism_bounds_connections(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    busy, peak, lock = [0], [0], threading.Lock()

    def task(conn: Any) -> Any:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        cur = conn.cursor()
        cur.execute("select 1")
        time.sleep(0.05)
        with lock:
            busy[0] -= 1
        return id(conn)

    with ConnectionPool(ep) as pool:
        outcomes = run_tasks(pool, [Task(str(i), task) for i in range(12)], workers=2)
        assert pool.opened <= 2
    assert all(o.error is None for o in outcomes)
    assert peak[0] == 2
    assert len({o.value for o in outcomes}) <= 2


def test_a_broken_check_hides_nothing_and_no_secret_leaks(shop_reader: ShopReader) -> None:
    _, admin, ep = shop_reader
    baseline = capture_baseline(admin)  # production's view, as `drill baseline capture` reads it
    assert ep.password is not None
    pw = ep.password.reveal()  # the secret the validators hold
    cfg = ValidatorsConfig.model_validate(
        {
            "schema": {"baseline": "unused.json"},
            "row_counts": {"orders": {"equals_baseline": True}, "missing_table": {"min": 0}},
            "smoke": [
                # the server echoes the failing SQL (with the password) in its error: it must be masked
                {"name": "leaky", "sql": f"select '{pw}' from no_such_relation", "expect": 1},
                {"name": "customers", "sql": "select count(*) from customers", "expect": 50},
            ],
            "freshness": {"column": "orders.no_such_column"},
            "parallelism": 3,
        }
    )
    report = run_validators(ep, cfg, params={}, baseline=baseline)
    by = {f.check: f for f in report.findings}
    assert by["validators' role is read-only"].passed
    assert by["schema matches baseline"].passed
    assert by["orders rows"].passed and by["customers"].passed
    assert not by["missing_table rows"].passed
    assert not by["leaky"].passed and "no_such_relation" in by["leaky"].detail
    assert not by["newest commit"].passed and "no_such_column" in by["newest commit"].detail
    assert not report.passed
    text = json.dumps([f.to_dict() for f in report.findings]) + repr(report) + str(ep) + repr(ep)
    assert pw not in text
    assert all(f.duration_ms is not None for f in report.findings)


def test_cannot_connect_raises_without_the_password(db_server: PgServer | MariaDbServer) -> None:
    from validators.endpoint import Secret

    wrong = dataclasses.replace(db_server.endpoint, password=Secret("S3cret-wrong-" + db_server.password))
    for call in (
        lambda: probe(wrong),
        lambda: connect(wrong),
        lambda: run_validators(wrong, ValidatorsConfig(), params={}, baseline=None),
    ):
        with pytest.raises(ValidatorError) as exc:
            call()
        msg = str(exc.value)
        assert "S3cret-wrong" not in msg and db_server.password not in msg
        assert "cannot connect" in msg and ("password" in msg.lower() or "denied" in msg.lower())
    nowhere = dataclasses.replace(db_server.endpoint, host="/nonexistent", unix_socket="/nonexistent/sock")
    with pytest.raises(ValidatorError, match="cannot connect"):
        probe(nowhere)


def test_probe_and_schema_without_baseline(shop_reader: ShopReader) -> None:
    _, _, ep = shop_reader
    version = probe(ep)
    assert version[:2].isdigit()
    cfg = ValidatorsConfig.model_validate(
        {"schema": {"baseline": "/nonexistent/baseline.json"}, "freshness": {"column": "orders.updated_at"}}
    )
    report = run_validators(ep, cfg, params={}, baseline=None)
    by = {f.check: f for f in report.findings}
    assert not by["schema matches baseline"].passed and "cannot read baseline" in by["schema matches baseline"].detail
    assert by["newest commit"].passed
    assert isinstance(FreshnessConfig, type)
