"""Metrics and notifications against real sockets (a local HTTP server) and moto's CloudWatch/SNS/SQS."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families

from drills.api import RunOptions, run_drill
from drills.clock import SystemClock
from drills.deliver import Outlets, deliver
from drills.demo.postgres import DemoSource
from drills.evidence import generate_keypair
from drills.journal import Journal, read_events
from drills.metrics import write_textfile
from drills.outcome import Outcome
from drills.runbook import load_runbook

NOW = time.time()


def outcome(**kw: Any) -> Outcome:
    base: dict[str, Any] = {
        "run_id": "20261201T030000Z-abc123", "runbook": "orders-pitr", "engine": "postgres",
        "kind": "postgres-pitr", "verdict": "failed", "finished_at": NOW, "rto_seconds": 12.5,
        "rto_objective_seconds": 300.0, "rpo_seconds": 0.25, "rpo_objective_seconds": 60.0,
        "last_success_at": NOW - 86400, "reasons": ("validator: 1 check(s) failed: row_counts: orders",),
    }  # fmt: skip
    return Outcome(**(base | kw))


@dataclass
class Recorder:
    """A real HTTP server on 127.0.0.1 that records every request and answers ``status``."""

    status: int = 200
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rec.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )
            time.sleep(rec.delay)
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _any  # noqa: N815 - http.server's naming

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield rec
    httpd.shutdown()
    httpd.server_close()


def test_textfile_is_written_atomically_and_parses(tmp_path: Path) -> None:
    target = write_textfile(outcome(), tmp_path)
    assert target == tmp_path / "restore_drill_orders-pitr.prom"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644
    names = {f.name for f in text_string_to_metric_families(target.read_text())}
    assert {
        "restore_drill_rto_seconds",
        "restore_drill_verdict",
        "restore_drill_last_success_timestamp_seconds",
    } <= names
    write_textfile(outcome(runbook="other"), tmp_path)  # a second runbook in the same directory keeps the first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restore_drill_orders-pitr.prom", "restore_drill_other.prom"]


def test_pushgateway_receives_a_put_grouped_by_runbook_with_basic_auth(server: Recorder) -> None:
    url = server.url.replace("http://", "http://pusher:s3cret@")
    records = deliver(outcome(), Outlets(pushgateway_url=url))
    assert records == [{"channel": "pushgateway", "target": server.url, "ok": True, "detail": None}]
    (req,) = server.requests
    assert req["method"] == "PUT" and req["path"] == "/metrics/job/restore_drill/runbook/orders-pitr"
    assert req["headers"]["Authorization"] == "Basic cHVzaGVyOnMzY3JldA=="  # base64("pusher:s3cret")
    got = {(s.name, s.labels.get("verdict")): s.value
           for f in text_string_to_metric_families(req["body"].decode()) for s in f.samples}  # fmt: skip
    assert got[("restore_drill_rto_seconds", None)] == 12.5 and got[("restore_drill_verdict", "failed")] == 1


def test_webhook_posts_slack_json_on_failure(server: Recorder, tmp_path: Path) -> None:
    hook = server.url + "/services/T000/B000/XXXXTOKEN"
    journal = Journal.create("run-1", SystemClock(), tmp_path)
    records = deliver(outcome(evidence="/ev/run.evidence.json"), Outlets(webhook_url=hook), journal)
    assert records[0]["ok"] is True and records[0]["because"] == ["failure"]
    assert records[0]["target"] == server.url + "/…"
    (req,) = server.requests
    assert req["path"] == "/services/T000/B000/XXXXTOKEN"
    assert req["headers"]["Content-Type"] == "application/json"
    text = json.loads(req["body"])["text"]
    assert text.startswith("restore drill orders-pitr: FAILED") and "row_counts: orders" in text
    assert "evidence: /ev/run.evidence.json" in text
    assert "XXXXTOKEN" not in (tmp_path / "runs" / "run-1" / "journal.jsonl").read_text()
    assert deliver(outcome(verdict="passed"), Outlets(webhook_url=hook)) == []  # a pass is quiet by default
    assert len(server.requests) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fault", ["500", "refused", "timeout"])
def test_a_failed_notification_is_recorded_never_raised_and_keeps_the_token_out(
    server: Recorder, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{_free_port()}" if fault == "refused" else server.url
    hook = base + "/services/T000/B000/XXXXTOKEN"
    server.status = 500 if fault == "500" else 200
    server.delay = 2.0 if fault == "timeout" else 0.0
    outlets = Outlets(webhook_url=hook, timeout_seconds=0.5)
    (rec,) = deliver(outcome(), outlets)
    assert rec["ok"] is False and rec["channel"] == "webhook"
    expected = {"500": "HTTP Error 500", "refused": "Connection refused", "timeout": "timed out"}[fault]
    assert expected in rec["error"]
    out = capsys.readouterr()
    assert "XXXXTOKEN" not in json.dumps(rec) + out.out + out.err


@mock_aws
def test_cloudwatch_metrics_land_and_read_back() -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    (rec,) = deliver(
        outcome(), Outlets(cloudwatch_namespace="RestoreDrills"), session=boto3.Session(region_name="us-east-1")
    )
    assert rec["ok"] is True, rec
    listed = cw.list_metrics(Namespace="RestoreDrills")["Metrics"]
    assert {m["MetricName"] for m in listed} >= {"restore_drill_rto_seconds", "restore_drill_verdict"}
    dims = [{"Name": "Runbook", "Value": "orders-pitr"}, {"Name": "Engine", "Value": "postgres"}]
    from datetime import UTC, datetime, timedelta

    stats = cw.get_metric_statistics(
        Namespace="RestoreDrills", MetricName="restore_drill_rto_seconds", Dimensions=dims,
        StartTime=datetime.now(UTC) - timedelta(hours=1), EndTime=datetime.now(UTC) + timedelta(hours=1),
        Period=3600, Statistics=["Maximum"],
    )  # fmt: skip
    assert [p["Maximum"] for p in stats["Datapoints"]] == [12.5]


@mock_aws
def test_sns_notification_reaches_a_subscribed_queue() -> None:
    sns = boto3.client("sns", region_name="eu-west-1")
    sqs = boto3.client("sqs", region_name="eu-west-1")
    topic = sns.create_topic(Name="drills")["TopicArn"]
    queue = sqs.create_queue(QueueName="drill-alerts")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)
    (rec,) = deliver(outcome(regression={"flag": True, "delta_pct": 40, "baseline_drills": 10,
                                         "baseline_rto_ms": 9000, "threshold_ms": 11000}),
                     Outlets(sns_topic_arn=topic), session=boto3.Session())  # fmt: skip
    assert rec["ok"] is True and rec["because"] == ["failure", "regression"]
    (msg,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    body = json.loads(msg["Body"])
    assert body["Subject"] == "restore drill orders-pitr: FAILED (RTO regression)"
    assert "+40 % against the median of the last 10 passed drills" in body["Message"]


@mock_aws
def test_sns_to_a_missing_topic_is_recorded_not_raised() -> None:
    (rec,) = deliver(
        outcome(), Outlets(sns_topic_arn="arn:aws:sns:us-east-1:123456789012:nope"), session=boto3.Session()
    )
    assert rec["ok"] is False and "NotFound" in rec["error"]


def test_a_real_drill_passes_despite_a_dead_webhook_and_records_it(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/services/T/B/XXXXTOKEN"
    outlets = Outlets(metrics_textfile=tmp_path, webhook_url=dead, notify_on=frozenset({"failure", "passed"}))
    res = run_drill(load_runbook(demo_source.runbook), RunOptions(outlets=outlets, evidence_dir=tmp_path / "ev"))
    assert (res.verdict, res.exit_code) == ("passed", 0)
    by = {d["channel"]: d for d in res.to_json()["deliveries"]}
    assert by["prometheus-textfile"]["ok"] is True
    assert by["webhook"]["ok"] is False and "Connection refused" in by["webhook"]["error"]
    prom = {s.name: s.value for f in text_string_to_metric_families((tmp_path / "restore_drill_demo-shop-pitr.prom")
            .read_text()) for s in f.samples if s.labels.get("verdict") in (None, "passed")}  # fmt: skip
    assert prom["restore_drill_rto_seconds"] == pytest.approx(res.rto_seconds)
    assert prom["restore_drill_verdict"] == 1
    events = read_events(drill_home / "runs" / res.run_id / "journal.jsonl")
    failed = [e for e in events if e.get("event") == "delivery" and e.get("ok") is False]
    assert [e["channel"] for e in failed] == ["webhook"]
    everything = json.dumps(events) + (res.evidence.read_text() if res.evidence else "")
    assert "XXXXTOKEN" not in everything


def test_a_second_real_drill_records_its_regression_against_the_first(demo_source: DemoSource, tmp_path: Path) -> None:
    opts = RunOptions(outlets=Outlets(), evidence_dir=tmp_path / "ev")
    first = run_drill(load_runbook(demo_source.runbook), opts)
    second = run_drill(load_runbook(demo_source.runbook), opts)
    assert first.drill.regression is None  # nothing to compare with yet
    reg = second.drill.regression
    assert first.drill.measurement is not None
    assert (
        reg is not None
        and reg["baseline_drills"] == 1
        and reg["baseline_rto_ms"] == first.drill.measurement.achieved_rto_ms
    )
    assert reg["mad_ms"] is None and reg["threshold_margin"] == "absolute"  # one drill: only the floors
    size = reg["per_gb"]["restored_bytes"]
    rto = second.drill.measurement.achieved_rto_ms  # type: ignore[union-attr]
    assert size > 0 and reg["per_gb"]["rto_ms_per_gb"] * size / 10**9 == pytest.approx(rto, abs=1)  # back to the RTO
    assert reg["trend"] == {"direction": None, "drills": 2, "reason": "2 drill(s) with a measured RTO; a trend needs 5"}
    envelope = json.loads(second.evidence.read_text())  # type: ignore[union-attr]
    assert json.loads(base64.b64decode(envelope["payload"]))["predicate"]["regression"] == reg


def _doctor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "orders.yaml").write_text(
        "name: orders\nsource: {kind: postgres-dump, archive: /nonexistent.pgc}\nobjectives: {rto_seconds: 600}\n"
        "schedule: {every: 7d}\nevidence: {dir: evidence, signing_key: drill.key}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "doctor", str(tmp_path / "orders.yaml"), "--notify"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "RESTORE_DRILLS_HOME": str(tmp_path / "home"), **env},
    )  # fmt: skip


def test_doctor_notify_sends_its_findings_to_the_webhook(server: Recorder, tmp_path: Path) -> None:
    res = _doctor(tmp_path, {"RESTORE_DRILLS_WEBHOOK_URL": server.url + "/hook/XXXXTOKEN"})
    assert res.returncode == 1, res.stdout + res.stderr  # the findings decide the exit, not the notification
    (req,) = server.requests
    text = json.loads(req["body"])["text"]
    assert text.startswith("restore drills: 1 finding(s) need a human (1 runbook(s) checked)")
    assert "orders" in text and "XXXXTOKEN" not in res.stdout + res.stderr


def test_doctor_notify_to_a_dead_webhook_says_so_and_keeps_its_exit_code(tmp_path: Path) -> None:
    res = _doctor(tmp_path, {"RESTORE_DRILLS_WEBHOOK_URL": f"http://127.0.0.1:{_free_port()}/hook/XXXXTOKEN"})
    assert res.returncode == 1
    assert "webhook not delivered (http://127.0.0.1:" in res.stderr and "Connection refused" in res.stderr
    assert "XXXXTOKEN" not in res.stdout + res.stderr
