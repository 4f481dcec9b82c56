"""Whatever AWS call fails, and however, no drill resource outlives teardown + sweep; look-alikes always survive.

Every drill runs through the real machine (retries, deadlines, teardown as in production), validated on a
real local PostgreSQL (``plane``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from moto import mock_aws

from drills.aws.aurora_declaration import AuroraSnapshotSource
from drills.aws.calls import TAG_EXPIRES, TAG_RUN_ID
from drills.aws.rds_declaration import RdsSnapshotSource
from drills.aws.sweep import sweep
from drills.backends import backend_factory
from drills.clock import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import REGION, Fakes, drill_leftovers, isolation, machine_drill, make_world, settings
from dataplane import PgPlane, pg_plane
from servers import PgServer


def _source(w: Any, aurora: bool, database: str) -> Any:
    if aurora:
        return AuroraSnapshotSource.model_validate(
            {"kind": "aurora-snapshot", "region": REGION, "engine": "aurora-postgresql",
             "snapshot": w.cluster_snapshot, "isolation": isolation(w), "database": database}
        )  # fmt: skip
    return RdsSnapshotSource.model_validate(
        {"kind": "rds-snapshot", "region": REGION, "engine": "postgres", "snapshot": w.snapshot,
         "isolation": isolation(w), "database": database}
    )  # fmt: skip


@pytest.mark.slow  # ~12-17 s each: one whole drill per AWS call it makes
@pytest.mark.parametrize("aurora", [False, True], ids=["rds", "aurora"])
@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_fault_at_every_call_leaves_nothing_behind(aurora: bool, mode: str, plane: PgPlane, tmp_path: Path) -> None:
    """Fail call 1, then call 2, ... of a whole drill (teardown included), each time in a fresh run.

    "before": the call never reaches AWS. "after": AWS performed it but the
    answer is lost (so creates happened that the backend never heard of).
    """
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session, aurora=aurora, rds=not aurora)
        clock = FakeClock()
        fakes = Fakes(clock, restore_seconds=20, modify_seconds=10).install(session)
        rds = session.client("rds")
        i, total, leaks_after_teardown = 0, None, []
        while total is None or i <= total:
            fakes.calls.clear()
            fakes.fail_at, fakes.fail_mode = (i or None), mode
            b = backend_factory("aurora" if aurora else "rds")(
                _source(w, aurora, plane.database), settings(session, clock, run_id=f"run-{mode}-{i}")
            )
            out = machine_drill(b, session, clock, plane, tmp_path)
            if i == 0:
                assert out.error is None, out.error
                assert out.verdict == "passed"
                total = len(fakes.calls)
            fakes.fail_at = None
            after_teardown = drill_leftovers(session)
            if after_teardown:
                # acceptable only when the fault hit teardown itself, which then said so
                assert out.teardown_errors, f"call {i} ({mode}): silent leak {after_teardown}"
                leaks_after_teardown.append(i)
            clock.advance(7 * 3600)
            sweep(session, timedelta(hours=6), False, lambda _: False, clock)
            assert drill_leftovers(session) == [], f"call {i} ({mode}): leaked after sweep"
            if aurora:
                assert rds.describe_db_clusters(DBClusterIdentifier=w.source_cluster)["DBClusters"]
            else:
                assert rds.describe_db_instances(DBInstanceIdentifier=w.source_instance)["DBInstances"]
            i += 1
        assert total is not None and total > 20


LOOK_ALIKE = st.sampled_from(["no-tags", "other-run-live", "other-run-unexpired", "our-tag-no-prefix", "our-name"])


@pytest.fixture(scope="module")
def shared(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One moto world and data plane for all examples (building one costs ~1.5 s); names and run ids differ."""
    with mock_aws(), pg_plane(pg_server) as plane:
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        clock = FakeClock()
        Fakes(clock).install(session)
        tmp = tmp_path_factory.mktemp("look-alikes")
        yield {"session": session, "world": w, "clock": clock, "n": 0, "plane": plane, "tmp": tmp}


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.tuples(LOOK_ALIKE, st.sampled_from(["instance", "sg", "subnet-group"])), max_size=5))
def test_look_alikes_survive_drill_teardown_and_sweep(shared: dict[str, Any], kinds: list[tuple[str, str]]) -> None:
    session, w, clock = shared["session"], shared["world"], shared["clock"]
    shared["n"] += 1
    n = shared["n"]
    run_id = f"run-prop-{n}"
    plane: PgPlane = shared["plane"]
    b: Any = backend_factory("rds")(_source(w, False, plane.database), settings(session, clock, run_id=run_id))
    far = "2099-01-01T00:00:00.000Z"
    made: list[str] = [w.source_instance]
    for i, (variant, kind) in enumerate(kinds):
        name = {"our-name": b.base_id, "our-tag-no-prefix": f"prod-like-{n}-{i}"}.get(variant, f"drill-orders-{n}x{i}")
        if name in made:
            continue
        tags = {
            "no-tags": [],
            "other-run-live": [{"Key": TAG_RUN_ID, "Value": "live-run"}],
            "other-run-unexpired": [{"Key": TAG_RUN_ID, "Value": "old"}, {"Key": TAG_EXPIRES, "Value": far}],
            "our-tag-no-prefix": [{"Key": TAG_RUN_ID, "Value": run_id}],
            "our-name": [],
        }[variant]
        if kind == "instance":
            w.rds.create_db_instance(
                DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t4g.micro",
                MasterUsername="u", MasterUserPassword="password1", AllocatedStorage=20, Tags=tags,
            )  # fmt: skip
        elif kind == "sg":
            spec = [{"ResourceType": "security-group", "Tags": tags}] if tags else []
            w.ec2.create_security_group(GroupName=name, Description="x", VpcId=w.vpc_id, TagSpecifications=spec)
        else:
            w.rds.create_db_subnet_group(
                DBSubnetGroupName=name, DBSubnetGroupDescription="x", SubnetIds=w.subnet_ids, Tags=tags
            )
        made.append(name)
    out = machine_drill(b, session, clock, plane, shared["tmp"])
    clock.advance(7 * 3600)
    sweep(session, timedelta(hours=6), False, lambda r: r == "live-run", clock)
    rds = session.client("rds")
    ec2 = session.client("ec2")
    present = {d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]}
    present |= {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    present |= {g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]}
    assert set(made) <= present, out.error
    # and nothing of this run is left (unless a look-alike took our name, which preflight refused)
    assert not [r for r in out.registry if r.id in present and r.id not in made]
