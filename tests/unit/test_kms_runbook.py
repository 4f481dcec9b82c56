"""A runbook that signs with AWS KMS: the signer is built before anything starts (moto KMS)."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from recorder import Recorder

from drills.api import RunOptions, run_drill
from drills.clock import FakeClock
from drills.errors import EvidenceError
from drills.evidence.keys import keyid_for, load_public_key
from drills.runbook import load_runbook

REGION = "us-east-1"


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
        yield boto3.Session(region_name=REGION)


def runbook(tmp_path: Path, key: str) -> Path:
    (tmp_path / "dump.pgc").write_bytes(b"x")
    (tmp_path / "rb.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: kms-signed
            source: {{kind: postgres-dump, archive: dump.pgc}}
            objectives: {{rto_seconds: 60}}
            evidence: {{dir: evidence, kms_key_id: "{key}"}}
            """
        )
    )
    return tmp_path / "rb.yaml"


def test_evidence_is_signed_by_the_runbooks_kms_key(session: Any, tmp_path: Path) -> None:
    kms = session.client("kms")
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    res = run_drill(
        load_runbook(runbook(tmp_path, arn)),
        RunOptions(clock=FakeClock(), aws_session=session, backend_factory=lambda _s, _st: Recorder(fail_in="connect")),
    )
    assert res.evidence is not None and res.exit_code == 3
    env = json.loads(res.evidence.read_text())
    der = kms.get_public_key(KeyId=arn)["PublicKey"]
    (tmp_path / "kms.pub").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"
    )
    assert env["signatures"][0]["keyid"] == load_public_key(tmp_path / "kms.pub").keyid
    assert env["signatures"][0]["keyid"] == keyid_for(load_public_key(tmp_path / "kms.pub").public_key)


def test_an_unusable_kms_key_stops_the_run_before_it_starts(session: Any, tmp_path: Path) -> None:
    symmetric = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(EvidenceError, match="ECC_NIST_P256"):
        run_drill(load_runbook(runbook(tmp_path, symmetric)), RunOptions(aws_session=session))
    assert not (tmp_path / "home" / "runs").exists()  # nothing was started
