"""Incident mode on AWS (moto): a kept copy lives exactly as long as --keep said, by its own tags.

Drills run through the real machine (``--keep`` is the machine's keep step), validated on a real local
PostgreSQL (``plane``); a crashed run is one whose runner was killed as teardown began.
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

from drills.aws.calls import TAG_CREATED, TAG_EXPIRES, TAG_KEPT, tag_value
from drills.aws.rds_declaration import RdsSnapshotSource
from drills.aws.sweep import sweep
from drills.backends import backend_factory
from drills.clock import FakeClock, iso
from drills.journal import read_events, state_home
from drills.keep import keep_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import REGION, Fakes, Outcome, World, drill_leftovers, isolation, machine_drill, make_world, settings
from dataplane import PgPlane

HOUR = 3600.0
SIX_HOURS = timedelta(hours=6)


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world(session: Any) -> World:
    return make_world(session)


def rds_backend(
    w: World, session: Any, clock: FakeClock, run_id: str, runbook: str = "orders", database: str = "orders"
) -> Any:
    src = RdsSnapshotSource.model_validate(
        {
            "kind": "rds-snapshot",
            "region": REGION,
            "engine": "postgres",
            "snapshot": w.snapshot,
            "database": database,
            "isolation": isolation(w),
        }
    )
    return backend_factory("rds")(src, settings(session, clock, run_id=run_id, runbook=runbook))


def kept_details(out: Outcome) -> dict[str, str]:
    """What the run's journal says the keep step did to each AWS resource (kind -> detail)."""
    assert out.result is not None
    events = read_events(state_home() / "runs" / out.result.run_id / "journal.jsonl")
    return {r["kind"]: r["detail"] for r in keep_state(events).kept_resources if r["kind"] != "scratch-dir"}


def actions(records: list[dict[str, Any]], run_id: str) -> set[str]:
    return {r["action"] for r in records if r["run_id"] == run_id}


def test_a_kept_copy_goes_at_its_own_expiry_not_at_older_than(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    # a two-hour restore, then one hour of keep: the hour counts from the end of the drill
    Fakes(clock, restore_seconds=2 * HOUR).install(session)
    # first a run that crashed (never kept) two hours earlier, for contrast
    crashed = rds_backend(world, session, clock, "crashed-run", runbook="billing", database=plane.database)
    assert machine_drill(crashed, session, clock, plane, tmp_path, killed_at_teardown=True).error is None
    kept = rds_backend(world, session, clock, "kept-run", database=plane.database)
    out = machine_drill(kept, session, clock, plane, tmp_path, keep_seconds=int(HOUR))
    assert out.error is None and out.verdict == "passed"
    drill_ended = clock.now()
    details = kept_details(out)
    assert sorted(details) == ["ec2-security-group", "rds-instance", "rds-subnet-group"]
    assert all(d.startswith("tagged") for d in details.values()), details

    db = world.rds.describe_db_instances(DBInstanceIdentifier=kept.instance_id)["DBInstances"][0]
    assert tag_value(db["TagList"], TAG_EXPIRES) == iso(drill_ended + timedelta(hours=1))
    assert tag_value(db["TagList"], TAG_KEPT) == iso(drill_ended)
    created = tag_value(db["TagList"], TAG_CREATED)
    assert created is not None and created < iso(drill_ended - timedelta(hours=2))

    clock.advance(HOUR - 60)  # 59 minutes after the drill: still the user's
    early = sweep(session, SIX_HOURS, False, lambda _r: False, clock)
    assert actions(early, "kept-run") == {"kept"}
    assert all("kept for inspection until" in r["detail"] for r in early if r["run_id"] == "kept-run")
    assert len(drill_leftovers(session)) == 6

    clock.advance(120)  # 61 minutes after: gone, although created three hours ago, well under --older-than 6h
    # (the crashed run started five hours ago: under 6 h, so its expired resources stay)
    late = sweep(session, SIX_HOURS, False, lambda _r: False, clock)
    assert actions(late, "kept-run") == {"deleted"}
    assert {r["kind"] for r in late if r["run_id"] == "kept-run" and r["kept"]} == {
        "rds-instance",
        "rds-subnet-group",
        "ec2-security-group",
    }
    # the crashed run's resources are not kept ones: --older-than still guards them
    assert actions(late, "crashed-run") == {"kept"}
    assert all(x.startswith("drill-billing-") for x in drill_leftovers(session))
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]


def test_kept_resources_of_a_run_go_together(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    # the security group cannot be re-tagged: it keeps its creation expiry (6 h), the instance is kept 10 h
    fakes = Fakes(clock, fail_ops={"CreateTags": "UnauthorizedOperation"}).install(session)
    b = rds_backend(world, session, clock, "kept-run", database=plane.database)
    out = machine_drill(b, session, clock, plane, tmp_path, keep_seconds=int(10 * HOUR))
    assert out.error is None and out.verdict == "passed"
    details = kept_details(out)
    assert "UnauthorizedOperation" in details["ec2-security-group"]  # the keep went on, and said so
    assert details["rds-instance"].startswith("tagged") and details["rds-subnet-group"].startswith("tagged")
    assert fakes.count("CreateTags") == 1
    fakes.fail_ops.clear()

    clock.advance(7 * HOUR)  # the group's own tag has expired and it is older than 6 h
    records = sweep(session, SIX_HOURS, False, lambda _r: False, clock)
    group = next(r for r in records if r["kind"] == "ec2-security-group")
    assert group["action"] == "kept" and "rds-instance" in group["detail"], group
    assert len(drill_leftovers(session)) == 3

    clock.advance(3 * HOUR + 1)
    records = sweep(session, SIX_HOURS, False, lambda _r: False, clock)
    assert {r["action"] for r in records} == {"deleted"} and drill_leftovers(session) == []


def test_keep_refuses_a_look_alike_that_is_not_this_runs(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock).install(session)
    b = rds_backend(world, session, clock, "run-a", database=plane.database)
    out = machine_drill(b, session, clock, plane, tmp_path, killed_at_teardown=True)
    assert out.error is None
    instance = next(r for r in out.registry if r.kind == "rds-instance")
    arn = world.rds.describe_db_instances(DBInstanceIdentifier=b.instance_id)["DBInstances"][0]["DBInstanceArn"]
    world.rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": "restore-drills:run-id", "Value": "someone-else"}])
    with pytest.raises(Exception, match="refusing to tag"):
        b.keep(instance, out_ctx(clock), clock.now() + timedelta(hours=1))
    db = world.rds.describe_db_instances(DBInstanceIdentifier=b.instance_id)["DBInstances"][0]
    assert tag_value(db["TagList"], TAG_KEPT) is None


def out_ctx(clock: FakeClock) -> Any:
    from aws_fakes import ctx

    return ctx(clock, [], 3600)


def test_drill_sweep_cli_keeps_a_kept_copy_and_deletes_a_crashed_runs_leftovers(
    session: Any, world: World, capsys: pytest.CaptureFixture[str], plane: PgPlane, tmp_path: Path
) -> None:
    import json
    from datetime import UTC, datetime

    from drills.cli import build_parser, cmd_sweep

    # the CLI sweeps on the real clock: a copy kept for an hour from now, and a run that crashed long ago
    now = FakeClock(start=datetime.now(UTC))
    Fakes(now).install(session)
    kept = rds_backend(world, session, now, "kept-now", database=plane.database)
    out = machine_drill(kept, session, now, plane, tmp_path, keep_seconds=int(HOUR))
    assert out.error is None and out.verdict == "passed"
    old = FakeClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    crashed = rds_backend(world, session, old, "crashed-long-ago", runbook="billing", database=plane.database)
    assert machine_drill(crashed, session, old, plane, tmp_path, killed_at_teardown=True).error is None

    capsys.readouterr()  # the drives' logs
    code = cmd_sweep(build_parser().parse_args(["sweep", "--scope", "aws", "--region", REGION]))
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    by_run = {(r["run_id"], r["action"]) for r in report["resources"]}
    assert by_run == {("kept-now", "kept"), ("crashed-long-ago", "deleted")}
    assert all(x.startswith("drill-orders-") for x in drill_leftovers(session)) and len(drill_leftovers(session)) == 3
