"""The S3 evidence store and the notifications call AWS through AwsCaller, like the backends (moto).

Faults are injected in moto's backend (botocore then sees a real error response), so what is
tested is the retry on our side: botocore's own retries are off in these clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.s3.exceptions import S3ClientError
from moto.s3.models import S3Backend
from moto.sns.exceptions import SNSException
from moto.sns.models import SNSBackend

from drills.aws.clients import aws_client
from drills.clock import FakeClock
from drills.deliver import Outlets, deliver_text
from drills.errors import TransientError
from drills.evidence.s3 import S3Store

BUCKET = "drill-evidence-calls"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s = boto3.Session(region_name="us-east-1")
        s.client("s3").create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        yield s


def fail_first(n: int, real: Any, error: BaseException) -> tuple[Any, dict[str, int]]:
    seen = {"calls": 0}

    def patched(self: Any, *a: Any, **k: Any) -> Any:
        seen["calls"] += 1
        if seen["calls"] <= n:
            raise error
        return real(self, *a, **k)

    return patched, seen


def test_a_throttled_evidence_put_is_retried_on_the_drills_clock(session: Any, tmp_path: Path) -> None:
    record = tmp_path / "run-1.evidence.json"
    record.write_bytes(b'{"payload": "x", "payloadType": "t", "signatures": []}\n')
    clock = FakeClock()
    client = aws_client("s3", session=session, clock=clock)
    store = S3Store(BUCKET, "d/", 1, None, client=client)
    patched, seen = fail_first(2, S3Backend.put_object, S3ClientError("SlowDown", "Please reduce your request rate."))
    with mock.patch.object(S3Backend, "put_object", patched):
        doc = store.push(record, "rb", "run-1")
    assert doc["status"] == "stored", doc
    assert seen["calls"] == 3  # two refusals, then the put; no botocore retry in between (would be 3 per attempt)
    assert clock.monotonic_ns() > 0  # the backoff ran on the injected clock, not on the wall clock
    assert client.calls == 4  # 3 put attempts + the head_object that reads the lock back


def test_when_retries_run_out_the_push_is_pending_with_the_aws_code(session: Any, tmp_path: Path) -> None:
    record = tmp_path / "run-1.evidence.json"
    record.write_bytes(b"{}\n")
    client = aws_client("s3", session=session, clock=FakeClock())
    store = S3Store(BUCKET, "d/", 1, None, client=client)
    patched, seen = fail_first(99, S3Backend.put_object, S3ClientError("ServiceUnavailable", "down"))
    with mock.patch.object(S3Backend, "put_object", patched):
        doc = store.push(record, "rb", "run-1")
    assert doc["status"] == "pending" and doc["error"].startswith("ServiceUnavailable: ")
    assert seen["calls"] == 8  # AwsCaller's attempts, the same policy as every backend call


def test_a_non_retryable_error_is_not_retried(session: Any) -> None:
    client = aws_client("s3", session=session, clock=FakeClock())
    with pytest.raises(Exception, match="NoSuchBucket"):
        client.list_object_versions(Bucket="no-such-bucket")
    assert client.calls == 1


def test_retries_exhausted_raise_our_transient_error(session: Any) -> None:
    client = aws_client("s3", session=session, clock=FakeClock(), attempts=3)
    patched, _ = fail_first(99, S3Backend.list_object_versions, S3ClientError("InternalError", "boom"))
    with mock.patch.object(S3Backend, "list_object_versions", patched), pytest.raises(TransientError) as caught:
        client.list_object_versions(Bucket=BUCKET)
    assert client.calls == 3 and "InternalError" in str(caught.value)


def test_a_notification_that_meets_a_5xx_is_retried_and_delivered(session: Any) -> None:
    arn = session.client("sns").create_topic(Name="drills")["TopicArn"]
    throttled = SNSException("InternalError", "try again")
    patched, seen = fail_first(1, SNSBackend.publish, throttled)
    with mock.patch.object(SNSBackend, "publish", patched):
        (rec,) = deliver_text("doctor", "2 findings", Outlets(sns_topic_arn=arn), session=session)
    assert rec["ok"] is True, rec
    assert seen["calls"] == 2


def test_a_notification_gives_up_after_three_attempts_and_is_recorded(session: Any) -> None:
    arn = session.client("sns").create_topic(Name="drills")["TopicArn"]
    patched, seen = fail_first(99, SNSBackend.publish, SNSException("InternalError", "try again"))
    with mock.patch.object(SNSBackend, "publish", patched):
        (rec,) = deliver_text("doctor", "2 findings", Outlets(sns_topic_arn=arn), session=session)
    assert rec["ok"] is False and "TransientError" in rec["error"] and "InternalError" in rec["error"]
    assert seen["calls"] == 3
