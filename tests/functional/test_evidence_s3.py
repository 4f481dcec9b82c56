"""Evidence on S3 under Object Lock (moto S3 and KMS): locked, encrypted, read back, never overwritten.

moto enforces COMPLIANCE retention (deleting a locked version is refused) and
conditional puts; its ``get_object_retention`` is broken, so the facts come
from ``head_object`` as in production.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import structlog
from botocore.exceptions import ClientError
from moto import mock_aws
from recorder import Recorder

from drills.api import RunOptions, RunResult, run_drill
from drills.aws.clients import aws_client
from drills.cli import main
from drills.clock import FakeClock
from drills.errors import PreflightError
from drills.evidence.keys import generate_keypair
from drills.evidence.s3 import S3Store, sidecar_path
from drills.runbook import load_runbook

REGION = "us-east-1"
BUCKET = "drill-evidence-locked"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("RESTORE_DRILLS_HOME", str(tmp_path / "home"))
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s = boto3.Session(region_name=REGION)
        s.client("s3").create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        yield s


@pytest.fixture
def kms_key(session: Any) -> str:
    return str(session.client("kms").create_key()["KeyMetadata"]["Arn"])


def runbook(tmp_path: Path, bucket: str, kms_key: str) -> Path:
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "dump.pgc").write_bytes(b"x")
    (tmp_path / "rb.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: s3-evidence
            source: {{kind: postgres-dump, archive: dump.pgc}}
            objectives: {{rto_seconds: 60}}
            evidence:
              dir: evidence
              signing_key: drill.key
              s3: {{bucket: {bucket}, prefix: drills/, retention_days: 30, kms_key_id: "{kms_key}"}}
            """
        )
    )
    return tmp_path / "rb.yaml"


def drill(rb: Path, session: Any) -> RunResult:
    return run_drill(
        load_runbook(rb),
        RunOptions(clock=FakeClock(), aws_session=session, backend_factory=lambda _s, _st: Recorder(fail_in="connect")),
    )


def test_each_record_is_locked_encrypted_and_the_next_record_signs_what_s3_said(
    session: Any, kms_key: str, tmp_path: Path
) -> None:
    s3 = session.client("s3")
    rb = runbook(tmp_path, BUCKET, kms_key)
    first = drill(rb, session)
    assert first.evidence is not None and first.evidence_storage is not None
    assert first.evidence_storage["status"] == "stored", first.evidence_storage
    key = f"drills/s3-evidence/{first.run_id}.evidence.json"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == kms_key
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == first.evidence.read_bytes()
    with pytest.raises(ClientError, match="AccessDenied"):  # not even the account can remove it
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=head["VersionId"])

    second = drill(rb, session)
    assert second.evidence is not None
    payload = json.loads(second.evidence.read_text())["payload"]
    import base64

    predicate = json.loads(base64.b64decode(payload))["predicate"]
    attested = predicate["previous_drill_storage"]
    assert attested["key"] == key and attested["version_id"] == head["VersionId"]
    assert attested["object_lock_mode"] == "COMPLIANCE" and attested["retain_until"] is not None


def test_a_bucket_without_object_lock_is_refused_before_anything_starts(
    session: Any, kms_key: str, tmp_path: Path
) -> None:
    session.client("s3").create_bucket(Bucket="plain-bucket")
    with pytest.raises(PreflightError, match="does not have Object Lock enabled"):
        drill(runbook(tmp_path, "plain-bucket", kms_key), session)
    assert not (tmp_path / "home" / "runs").exists()


def test_a_failed_upload_keeps_the_local_record_and_push_retries(
    session: Any, kms_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(structlog.reset_defaults)
    from moto.s3.models import S3Backend

    rb = runbook(tmp_path, BUCKET, kms_key)

    def unavailable(*_a: Any, **_k: Any) -> Any:
        from moto.s3.exceptions import S3ClientError

        raise S3ClientError("ServiceUnavailable", "Please reduce your request rate.")

    with mock.patch.object(S3Backend, "put_object", unavailable):
        res = drill(rb, session)
    assert res.evidence is not None and res.evidence.exists()  # the local copy is the evidence
    assert res.evidence_storage is not None and res.evidence_storage["status"] == "pending"
    assert json.loads(sidecar_path(res.evidence).read_text())["status"] == "pending"

    code = main(["evidence", "push", str(rb), "--key", str(tmp_path / "drill.pub")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"stored         {res.run_id}.evidence.json" in out
    head = session.client("s3").head_object(Bucket=BUCKET, Key=f"drills/s3-evidence/{res.run_id}.evidence.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert main(["evidence", "push", str(rb), "--key", str(tmp_path / "drill.pub")]) == 0
    assert "(0 pushed now)" in capsys.readouterr().out


def test_an_object_planted_at_the_records_key_is_found_not_overwritten(
    session: Any, kms_key: str, tmp_path: Path
) -> None:
    rb = runbook(tmp_path, BUCKET, kms_key)
    res = drill(rb, session)
    assert res.evidence is not None
    same = S3Store(BUCKET, "drills/", 30, kms_key, client=aws_client("s3", session=session))
    again = same.push(res.evidence, "s3-evidence", res.run_id)
    assert again["status"] == "already-stored"  # a retried push (crash before the sidecar) finds its own record
    store = S3Store(BUCKET, "other/", 30, kms_key, client=aws_client("s3", session=session))
    planted = store.key_for("s3-evidence", res.run_id)
    session.client("s3").put_object(Bucket=BUCKET, Key=planted, Body=b'{"forged": true}')
    doc = store.push(res.evidence, "s3-evidence", res.run_id)
    assert doc["status"] == "conflict"
    assert session.client("s3").get_object(Bucket=BUCKET, Key=planted)["Body"].read() == b'{"forged": true}'


def test_push_never_locks_a_record_that_does_not_verify(
    session: Any, kms_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(structlog.reset_defaults)
    rb = runbook(tmp_path, BUCKET, kms_key)
    res = drill(rb, session)
    assert res.evidence is not None
    planted = res.evidence.parent / "20261201T000000Z-bad000.evidence.json"
    planted.write_bytes(res.evidence.read_bytes().replace(b'"sig": "', b'"sig": "AAAA', 1))
    assert main(["evidence", "push", str(rb), "--key", str(tmp_path / "drill.pub")]) == 3
    out = capsys.readouterr().out
    assert "skipped        20261201T000000Z-bad000.evidence.json: does not verify" in out
    listed = session.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="drills/").get("Contents", [])
    assert [o["Key"] for o in listed] == [f"drills/s3-evidence/{res.run_id}.evidence.json"]


def test_history_reads_the_drills_records_back_from_s3(
    session: Any, kms_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    """Real drills push; `drill history --evidence-s3` on another machine (no local evidence) shows them, chained."""
    request.addfinalizer(structlog.reset_defaults)
    rb = runbook(tmp_path, BUCKET, kms_key)
    runs = [drill(rb, session).run_id for _ in range(3)]
    assert (tmp_path / "home").is_dir()  # the drills' home: the history cache goes there
    capsys.readouterr()  # what the drills printed
    code = main(["history", "--evidence-s3", f"s3://{BUCKET}/drills/", "--key", str(tmp_path / "drill.pub"), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads(out.out)
    assert sorted(r["run_id"] for r in rows) == sorted(runs) and {r["verdict"] for r in rows} == {"failed"}
    by_run = {r["run_id"]: r["evidence"] for r in rows}
    assert by_run[runs[0]].startswith(f"s3://{BUCKET}/drills/s3-evidence/{runs[0]}.evidence.json?versionId=")
    assert "3 record(s), 3 checked now" in out.err
