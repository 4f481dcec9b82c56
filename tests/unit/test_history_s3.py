"""`drill history --evidence-s3`: the records the drills pushed to S3, verified as local ones, read once.

The records are written by the real append path (``drills.history.append_drill``: signed, chained)
and pushed by the real store (``S3Store.push``: Object Lock, checksum, conditional put) to moto S3.
Then an attacker with write access to the bucket (but not the signing key) plants, replaces and
deletes objects; none of it may become a row, and each must be named on stderr.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import structlog
from botocore.client import BaseClient
from moto import mock_aws

from drills.aws.clients import aws_client
from drills.cli import main
from drills.evidence import generate_keypair, load_signer, load_verifiers
from drills.evidence.canonical import canonical_json
from drills.evidence.dsse import sign_envelope
from drills.evidence.s3 import S3Store
from drills.evidence.statement import PAYLOAD_TYPE
from drills.evidence.store import envelope_bytes
from drills.history import PastDrill, append_drill, regression
from drills.ledger import read_s3_history

BUCKET = "drill-evidence-history"
URL = f"s3://{BUCKET}/drills"


def predicate(run_id: str, minute: int, runbook: str) -> dict[str, Any]:
    at = f"2026-11-01T10:{minute:02d}:00.000Z"
    return {
        "drill": {"id": run_id, "started_at": at, "finished_at": at},
        "runbook": {"name": runbook},
        "results": {"verdict": "passed", "achieved_rto_ms": 60_000 + 1000 * minute, "rto_objective_ms": 600_000},
    }


def append(directory: Path, keys: Path, runbook: str, run_id: str, minute: int) -> Path:
    def complete(past: list[PastDrill], trail: dict[str, Any]) -> dict[str, Any]:
        p = predicate(run_id, minute, runbook) | trail
        p["regression"] = regression(past, p["results"]["achieved_rto_ms"], p)
        return p

    from drills.evidence.statement import subject_for_bytes

    return append_drill(
        directory,
        runbook,
        load_verifiers(keys / "drill.pub"),
        load_signer(keys / "drill.key"),
        complete,
        run_id=run_id,
        subjects=[subject_for_bytes(f"runbook:{runbook}", b"x")],
    )


@pytest.fixture
def s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drill_home: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A locked bucket holding orders run-1..5 and billing bill-1..2, pushed by the drill's own store."""
    request.addfinalizer(structlog.reset_defaults)  # the CLI points structlog at pytest's captured stderr
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    drill_home.mkdir(mode=0o700)
    keys = tmp_path / "keys"
    keys.mkdir()
    generate_keypair(keys / "drill.key")
    generate_keypair(keys / "attacker.key")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        store = S3Store(BUCKET, "drills/", 30, None, client=aws_client("s3"))
        ev = tmp_path / "evidence"
        for n in range(1, 6):
            assert store.push(append(ev, keys, "orders", f"run-{n}", n), "orders", f"run-{n}")["status"] == "stored"
        for n in range(1, 3):
            path = append(ev, keys, "billing", f"bill-{n}", 10 + n)
            assert store.push(path, "billing", f"bill-{n}")["status"] == "stored"
        yield client


def history(keys: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["history", "--evidence-s3", URL, "--key", str(keys / "drill.pub"), "--json", *extra])
    out = capsys.readouterr()
    return code, [r["run_id"] for r in json.loads(out.out)], out.err


def key(runbook: str, run_id: str) -> str:
    return f"drills/{runbook}/{run_id}.evidence.json"


def test_every_pushed_record_is_a_row_and_a_second_run_downloads_nothing(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    made: list[str] = []  # every S3 API request any client sends, counted below botocore's client
    real_call = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counted(self: Any, operation: str, params: Any) -> Any:
        made.append(operation)
        return real_call(self, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", counted):
        code, ids, err = history(keys, capsys=capsys)
        assert code == 0, err
        assert ids == ["run-1", "run-2", "run-3", "run-4", "run-5", "bill-1", "bill-2"]  # by finish time
        assert made.count("GetObject") == 7 and "7 record(s), 7 checked now" in err
        made.clear()

        code, ids, err = history(keys, capsys=capsys)
        assert code == 0 and len(ids) == 7
        assert made == ["ListObjectVersions"]  # nothing downloaded the second time
        assert "0 checked now, 7 from the cache; 1 S3 call(s)" in err  # one listing page

        code, ids, err = history(keys, "--runbook", "billing", capsys=capsys)
        assert (code, ids) == (0, ["bill-1", "bill-2"]) and made == ["ListObjectVersions"] * 2
        assert history(keys, capsys=capsys)[1][:1] == ["run-1"]  # one runbook's read kept the others' cache
        assert made == ["ListObjectVersions"] * 3


def test_records_are_trusted_only_with_the_keys_given(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["history", "--evidence-s3", URL, "--key", str(tmp_path / "keys" / "attacker.pub"), "--json"])
    out = capsys.readouterr()
    assert code == 1 and json.loads(out.out) == []
    assert out.err.count("NOT VERIFIED (not shown): UNTRUSTED: s3://") == 7


def test_a_forged_a_tampered_and_an_unsigned_object_are_refused_never_counted(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert history(keys, capsys=capsys)[0] == 0  # cached: what follows must not be hidden by the cache
    # forged: a well-formed record of the next seq, signed by a key that is not trusted
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x",
                 "predicate": predicate("run-6", 6, "orders") | {"chain": {"seq": 6}}}  # fmt: skip
    forged = envelope_bytes(sign_envelope(canonical_json(statement), PAYLOAD_TYPE, load_signer(keys / "attacker.key")))
    s3.put_object(Bucket=BUCKET, Key=key("orders", "run-6"), Body=forged)
    # tampered: a new version put on top of run-2's locked record, its RTO rewritten (the signature kept)
    original = s3.get_object(Bucket=BUCKET, Key=key("orders", "run-2"))["Body"].read()
    envelope = json.loads(original)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["predicate"]["results"]["achieved_rto_ms"] = 1
    envelope["payload"] = base64.b64encode(canonical_json(payload)).decode()
    s3.put_object(Bucket=BUCKET, Key=key("orders", "run-2"), Body=json.dumps(envelope).encode())
    # unsigned: plain JSON that claims to be a record
    s3.put_object(Bucket=BUCKET, Key=key("orders", "run-7"), Body=json.dumps(predicate("run-7", 7, "orders")).encode())

    code, ids, err = history(keys, "--runbook", "orders", capsys=capsys)
    assert code == 1
    assert ids == ["run-1", "run-3", "run-4", "run-5"]
    assert f"NOT VERIFIED (not shown): UNTRUSTED: s3://{BUCKET}/{key('orders', 'run-6')}: " in err
    assert (
        f"NOT VERIFIED (not shown): EDIT: s3://{BUCKET}/{key('orders', 'run-2')}: run-2.evidence.json names a "
        "trusted key but does not verify" in err
    )
    assert "(1 older version(s) kept under it)" in err  # the locked original is still there
    assert f"NOT VERIFIED (not shown): UNPARSABLE: s3://{BUCKET}/{key('orders', 'run-7')}" in err
    assert "CHAIN BROKEN: GAP: runbook orders: seq 2 missing of 1..5" in err
    assert "3 checked now, 4 from the cache" in err  # only the replaced and new versions


def test_a_record_deleted_from_the_middle_is_a_gap(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s3.delete_object(Bucket=BUCKET, Key=key("orders", "run-3"))  # versioned: a delete marker hides the record
    code, ids, err = history(tmp_path / "keys", capsys=capsys)
    assert code == 1 and "run-3" not in ids and len(ids) == 6
    assert f"CHAIN BROKEN: DELETED: s3://{BUCKET}/{key('orders', 'run-3')} is hidden by a delete marker" in err
    assert "1 locked version(s) remain under it" in err
    assert "CHAIN BROKEN: GAP: runbook orders: seq 3 missing of 1..5: records were removed" in err
    assert "runbook billing" not in err


def test_a_record_moved_to_another_runbooks_folder_is_refused(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = s3.get_object(Bucket=BUCKET, Key=key("orders", "run-5"))["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key("billing", "run-5"), Body=body)
    code, ids, err = history(tmp_path / "keys", "--runbook", "billing", capsys=capsys)
    assert (code, ids) == (1, ["bill-1", "bill-2"])
    assert "RENAMED" in err and "records runbook 'orders', not 'billing'" in err


def test_read_s3_history_counts_its_calls(s3: Any, tmp_path: Path, drill_home: Path) -> None:
    """The library call, with the client's own counter: 1 listing + 7 downloads, then 1 listing."""
    verifiers = load_verifiers(tmp_path / "keys" / "drill.pub")
    for expected_calls in (8, 1):
        client = aws_client("s3")
        rows, problems, read = read_s3_history(
            S3Store(BUCKET, "drills/", 0, None, client=client), verifiers, "k", drill_home
        )
        assert problems == [] and len(rows) == 7 and client.calls == expected_calls, (client.calls, read)


def test_bad_store_urls_are_exit_2(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = str(tmp_path / "keys" / "drill.pub")
    assert main(["history", "--evidence-s3", "https://x/y", "--key", pub]) == 2
    assert "is not an s3:// URL" in capsys.readouterr().err
    assert main(["history", "--evidence-s3", "s3://no-such-bucket/p", "--key", pub]) == 2
    assert "no such bucket" in capsys.readouterr().err
    assert main(["history", "--evidence-s3", URL, "--evidence-dir", str(tmp_path), "--key", pub]) == 2


def test_an_oversized_object_is_refused_unread_and_other_keys_are_not_records(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import drills.evidence.s3

    s3.put_object(Bucket=BUCKET, Key=key("orders", "run-9"), Body=b"x" * 100_000)
    s3.put_object(Bucket=BUCKET, Key="drills/orders/notes.txt", Body=b"not evidence")
    monkeypatch.setattr(drills.evidence.s3, "MAX_OBJECT_BYTES", 50_000)  # a real record is far smaller
    code, ids, err = history(tmp_path / "keys", "--runbook", "orders", capsys=capsys)
    assert code == 1 and ids == ["run-1", "run-2", "run-3", "run-4", "run-5"]
    assert f"UNPARSABLE: s3://{BUCKET}/{key('orders', 'run-9')}: 100000 bytes, more than any record; not read" in err
    assert "notes.txt" not in err and "5 record(s)" not in err and "6 record(s), 6 checked now" in err


def test_a_cache_entry_this_version_cannot_read_is_judged_again_not_reported(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], drill_home: Path
) -> None:
    assert history(tmp_path / "keys", capsys=capsys)[0] == 0
    (cache,) = (drill_home / "cache").glob("history-s3-*.json")
    doc = json.loads(cache.read_text())
    first = next(iter(doc["rows"]))
    doc["rows"][first] = {"row": {"from_an_older_tool": True}}
    cache.write_text(json.dumps(doc))
    code, ids, err = history(tmp_path / "keys", capsys=capsys)
    assert code == 0 and len(ids) == 7 and "1 checked now, 6 from the cache" in err
