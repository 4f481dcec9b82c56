"""Aurora drills against moto: cluster restore, then its writer; both waited for and torn down.

Whole drills run through the real machine on the fake clock, validated on a real local PostgreSQL (``plane``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.aws.aurora_declaration import AuroraPitrSource, AuroraSnapshotSource
from drills.backends import backend_factory
from drills.clock import FakeClock
from drills.errors import PreflightError, RestoreFailed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import REGION, Fakes, World, ctx, drill_leftovers, isolation, machine_drill, make_world, settings
from dataplane import ROWS, PgPlane


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def world(session: Any) -> World:
    return make_world(session, aurora=True, rds=False)


def source(w: World, kind: str = "aurora-snapshot", **kw: Any) -> Any:
    fields: dict[str, Any] = {"kind": kind, "region": REGION, "engine": "aurora-postgresql", "isolation": isolation(w)}
    if kind == "aurora-snapshot":
        fields["snapshot"] = w.cluster_snapshot
        return AuroraSnapshotSource.model_validate({**fields, **kw})
    fields.update(source_cluster=w.source_cluster, target_time="latest")
    return AuroraPitrSource.model_validate({**fields, **kw})


def backend(src: Any, session: Any, clock: FakeClock, **kw: Any) -> Any:
    return backend_factory("aurora")(src, settings(session, clock, **kw))


@pytest.mark.parametrize("kind", ["aurora-snapshot", "aurora-pitr"])
def test_aurora_drill_end_to_end(
    world: World, session: Any, clock: FakeClock, kind: str, plane: PgPlane, tmp_path: Path
) -> None:
    fakes = Fakes(clock, restore_seconds=1200, modify_seconds=60).install(session)
    b = backend(source(world, kind, database=plane.database), session, clock)
    out = machine_drill(b, session, clock, plane, tmp_path)
    assert out.error is None, out.error
    assert out.result is not None and out.result.verdict == "passed"
    assert [f["actual"] for f in out.result.findings if f["check"] == "orders rows"] == [ROWS]
    assert [r.kind for r in out.registry] == [
        "ec2-security-group",
        "rds-subnet-group",
        "rds-cluster",
        "rds-instance",
    ]
    assert out.registry[-1].attrs["cluster"] == b.cluster_id
    assert [m.name for m in out.marks] == [
        "restore-requested",
        "cluster-available",
        "instance-available",
        "credentials-applied",
    ]
    ep = out.endpoint
    assert ep is not None and ep.host.startswith(f"{b.cluster_id}.cluster-") and ep.engine == "postgres"
    assert ep.user == "app_admin" and ep.password is not None
    assert plane.applied == [ep.password.reveal()]  # the validators' role was made with the password the drill set
    # the cluster's 20 minutes and its writer's are waited for on the fake clock, and counted in the RTO
    assert out.result.rto_seconds is not None and out.result.rto_seconds >= 1200 + 60
    assert fakes.count("CreateDBInstance") == 1 and fakes.count("ModifyDBCluster") == 1
    tf = b.target_facts()
    assert tf["writer"] == b.writer_id and tf["publicly_accessible"] is False and tf["deletion_protection"] is False
    assert out.isolation and all(f["passed"] for f in out.isolation)
    assert [t.detail for t in out.teardown] == ["deleted"] * 4
    assert drill_leftovers(session) == []
    assert world.rds.describe_db_clusters(DBClusterIdentifier=world.source_cluster)["DBClusters"]


def test_aurora_pitr_outside_window_refused(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    cl = world.rds.describe_db_clusters(DBClusterIdentifier=world.source_cluster)["DBClusters"][0]
    too_early = cl["EarliestRestorableTime"] - timedelta(hours=1)
    with pytest.raises(PreflightError, match="outside the restorable window"):
        backend(source(world, "aurora-pitr", target_time=too_early), session, clock).preflight(ctx(clock, []))


def test_aurora_terminal_cluster_state(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock, restore_seconds=300, terminal_status="inaccessible-encryption-credentials").install(session)
    out = machine_drill(
        backend(source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
    )
    assert out.result is not None and (out.result.failed_state, out.result.exit_code) == ("await_ready", 3)
    assert isinstance(out.error, RestoreFailed) and "inaccessible-encryption-credentials" in str(out.error)
    assert out.teardown_errors == [] and drill_leftovers(session) == []


def test_aurora_latest_snapshot_and_default_class(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    src = source(world, snapshot=None, latest_snapshot_of=world.source_cluster, snapshot_type="manual")
    assert src.instance_class == "db.t4g.medium"
    report = backend(src, session, clock).preflight(ctx(clock, []))
    assert report.recovery_point["snapshot_id"] == world.cluster_snapshot
