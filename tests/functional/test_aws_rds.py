"""RDS drills against moto, with injected time, phases, throttling and faults."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.backends import backend_factory
from drills.backends.aws_common import TAG_EXPIRES, TAG_RUN_ID, tag_value
from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, IsolationError, PreflightError, RestoreFailed, TeardownError
from drills.resources import Resource
from drills.sources import RdsPitrSource, RdsSnapshotSource
from drills.sweep import sweep
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import (  # noqa: E402
    REGION,
    Fakes,
    World,
    ctx,
    drill_leftovers,
    drive,
    isolation,
    make_world,
    settings,
)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session(aws: None) -> Any:
    return boto3.Session(region_name=REGION)


@pytest.fixture
def world(session: Any) -> World:
    return make_world(session)


def snap_source(w: World, **kw: Any) -> RdsSnapshotSource:
    fields: dict[str, Any] = {
        "kind": "rds-snapshot",
        "region": REGION,
        "engine": "postgres",
        "snapshot": w.snapshot,
        "database": "orders",
        "isolation": isolation(w),
    }
    fields.update(kw)
    return RdsSnapshotSource.model_validate(fields)


def backend(source: Any, session: Any, clock: FakeClock, **kw: Any) -> Any:
    return backend_factory("rds")(source, settings(session, clock, **kw))


def test_snapshot_drill_end_to_end(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock, restore_seconds=1800, modify_seconds=120).install(session)
    b = backend(snap_source(world), session, clock)
    out = drive(b, clock)
    assert out.error is None, out.error
    assert [r.kind for r in out.registry] == ["ec2-security-group", "rds-subnet-group", "rds-instance"]
    assert all(r.id.startswith("drill-orders-") for r in out.registry)
    ep = out.endpoint
    assert ep.engine == "postgres" and ep.database == "orders" and ep.user == "app_admin"
    assert ep.host.startswith(b.instance_id) and ep.port == 5432
    assert ep.password is not None and "****" in repr(ep.password) and len(ep.password.reveal()) >= 32
    names = [m.name for m in out.marks]
    assert names == ["restore-requested", "instance-available", "credentials-applied"]
    # enforced despite moto copying the public, protected source
    facts = {(f["check"], f["subject"]): f["passed"] for f in b.isolation_facts()}
    assert facts[("not-publicly-accessible", b.instance_id)] is True
    assert all(f["passed"] for f in b.isolation_facts())
    tf = b.target_facts()
    assert tf["publicly_accessible"] is False and tf["deletion_protection"] is False
    assert tf["backup_retention_days"] == 0
    # everything gone, source intact
    assert [t.deleted for t in out.teardown] == [True, True, True]
    assert drill_leftovers(session) == []
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]
    # a 30-minute restore stays cheap
    assert fakes.count("DescribeDBInstances") < 60
    assert clock.sleeps and max(clock.sleeps) <= 120 * 1.1 + 1e-9
