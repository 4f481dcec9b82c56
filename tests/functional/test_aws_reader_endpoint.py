"""What RDS and Aurora hand the connect state (moto): the master user is marked admin, an IAM user is not.

Marked admin, the endpoint is used only to create the validators' read-only
role (drills/reader.py; the data-plane path is in test_aws_e2e.py). With
``iam_auth`` the drill sets no password: ``master_username`` names a
read-only database user, and the validators' session check proves it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.aws.aurora_declaration import AuroraSnapshotSource
from drills.aws.rds_declaration import RdsSnapshotSource
from drills.backends import backend_factory
from drills.clock import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import REGION, Fakes, isolation, machine_drill, make_world, settings
from dataplane import PgPlane


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.mark.parametrize("iam", [False, True])
@pytest.mark.parametrize("family", ["rds", "aurora"])
def test_master_credentials_are_admin_an_iam_user_is_not(
    session: Any, family: str, iam: bool, plane: PgPlane, tmp_path: Path
) -> None:
    clock = FakeClock()
    w = make_world(session, aurora=family == "aurora", rds=family == "rds")
    fields: dict[str, Any] = {"region": REGION, "database": plane.database, "isolation": isolation(w), "iam_auth": iam}
    if iam:
        fields["master_username"] = "drill_reader"
    if family == "rds":
        src: Any = RdsSnapshotSource.model_validate(
            {"kind": "rds-snapshot", "engine": "postgres", "snapshot": w.snapshot, **fields}
        )
    else:
        src = AuroraSnapshotSource.model_validate(
            {"kind": "aurora-snapshot", "engine": "aurora-postgresql", "snapshot": w.cluster_snapshot, **fields}
        )
    Fakes(clock).install(session)
    out = machine_drill(backend_factory(family)(src, settings(session, clock)), session, clock, plane, tmp_path)
    ep, res = out.endpoint, out.result
    assert ep is not None and res is not None
    if iam:
        assert (ep.admin, ep.user, ep.options.get("auth")) == (False, "drill_reader", "iam")
        # the token goes only over TLS: the local data plane has none, so connect fails and nothing was sent
        assert (res.failed_state, res.exit_code) == ("connect", 3) and "SSL" in (res.error or "")
    else:
        assert ep.admin is True and ep.password is not None and len(ep.password.reveal()) >= 32
        assert (res.verdict, res.error) == ("passed", None)
        # the validators ran as the read-only role the admin endpoint created, never as the master
        reader = next(f for f in res.findings if f["validator"] == "session")["actual"]["role"]
        assert reader.startswith("drill_reader_") and ep.user not in reader
