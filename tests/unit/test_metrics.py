"""Metric and notification rendering: what Prometheus parses and what a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drills.deliver import Outlets
from drills.errors import InputError
from drills.metrics import cloudwatch_data, public_url, render
from drills.notify import message, subject, wanted
from drills.outcome import Outcome

T = 1_780_000_000.0


def outcome(**kw: object) -> Outcome:
    base: dict[str, object] = {
        "run_id": "20261201T030000Z-abc123",
        "runbook": "orders-pitr",
        "engine": "postgres",
        "kind": "postgres-pitr",
        "verdict": "passed",
        "finished_at": T,
        "rto_seconds": 12.5,
        "rto_objective_seconds": 300.0,
        "rpo_seconds": 0.25,
        "rpo_objective_seconds": 60.0,
        "last_success_at": T,
    }
    return Outcome(**(base | kw))  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


L = (("engine", "postgres"), ("runbook", "orders-pitr"))


def test_a_passed_drill_renders_the_documented_names_and_labels() -> None:
    got = samples(render(outcome()))
    assert got[("restore_drill_rto_seconds", L)] == 12.5
    assert got[("restore_drill_rto_objective_seconds", L)] == 300
    assert got[("restore_drill_rpo_seconds", L)] == 0.25
    assert got[("restore_drill_last_success_timestamp_seconds", L)] == T
    assert got[("restore_drill_last_run_timestamp_seconds", L)] == T
    assert got[("restore_drill_regression", L)] == 0
    assert got[("restore_drill_verdict", (*L, ("verdict", "passed")))] == 1
    assert got[("restore_drill_verdict", (*L, ("verdict", "failed")))] == 0


def test_unknown_values_are_absent_never_zero() -> None:
    # a drill that never validated has no RTO: 0 s would read as the best drill ever
    got = samples(render(outcome(verdict="failed", rto_seconds=None, rpo_seconds=None, last_success_at=None)))
    names = {name for name, _ in got}
    assert "restore_drill_rto_seconds" not in names
    assert "restore_drill_rpo_seconds" not in names
    assert "restore_drill_last_success_timestamp_seconds" not in names
    assert got[("restore_drill_verdict", (*L, ("verdict", "failed")))] == 1


def test_hostile_runbook_names_are_escaped_by_the_exposition_format() -> None:
    o = outcome(runbook='a"b\\c\nd')
    got = samples(render(o))
    assert got[("restore_drill_rto_seconds", (("engine", "postgres"), ("runbook", 'a"b\\c\nd')))] == 12.5


def test_cloudwatch_data_has_the_same_names_and_runbook_engine_dimensions() -> None:
    data = {d["MetricName"]: d for d in cloudwatch_data(outcome(verdict="failed", rto_seconds=None))}
    assert "restore_drill_rto_seconds" not in data
    assert data["restore_drill_verdict"]["Value"] == 0
    assert data["restore_drill_rpo_seconds"]["Unit"] == "Seconds"
    assert data["restore_drill_verdict"]["Dimensions"] == [
        {"Name": "Runbook", "Value": "orders-pitr"},
        {"Name": "Engine", "Value": "postgres"},
    ]


def test_notifications_only_for_failure_and_regression_by_default() -> None:
    on = frozenset({"failure", "regression"})
    assert wanted(outcome(), on) == []
    assert wanted(outcome(verdict="failed"), on) == ["failure"]
    assert wanted(outcome(regression={"flag": True}), on) == ["regression"]
    assert wanted(outcome(), frozenset({"passed"})) == ["passed"]


def test_message_says_why_and_masks_secrets() -> None:
    reg = {"flag": True, "delta_pct": 53, "baseline_drills": 6, "baseline_rto_ms": 1_310_000, "threshold_ms": 1_977_170,
           "trend": {"direction": "increasing", "slope_ms_per_day": 10_000, "p_value": "0.0004"},
           "projection": {"summary": "at +3.0 GB/month, RTO reaches the 4h objective around 2029-08"}}  # fmt: skip
    o = outcome(verdict="failed", reasons=("connect failed: postgresql://app:hunter2@db/x refused",), regression=reg)
    text = message(o)
    assert "hunter2" not in text and "postgresql://app:***@db/x" in text
    assert "+53 % against the median of the last 6 passed drills (1310.000s)" in text
    assert "trend: increasing, +10.0s/day (Mann-Kendall p=0.0004)" in text
    assert "around 2029-08" in text
    assert subject(o) == "restore drill orders-pitr: FAILED (RTO regression)"
    assert len(subject(outcome(runbook="x" * 300))) == 100


def test_public_url_keeps_no_token_or_credentials() -> None:
    assert public_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET") == "https://hooks.slack.com/…"
    assert public_url("https://u:pw@push.example:9091/") == "https://push.example:9091"


def test_outlets_from_the_environment(tmp_path: Path) -> None:
    env = {
        "RESTORE_DRILLS_WEBHOOK_URL": "https://hooks.example/T/B/secret",
        "RESTORE_DRILLS_SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:drills",
        "RESTORE_DRILLS_NOTIFY_ON": "failure, passed",
        "RESTORE_DRILLS_METRICS_TEXTFILE": str(tmp_path),
    }
    o = Outlets.from_env(env)
    assert o.notify_on == {"failure", "passed"} and o.metrics_textfile == tmp_path
    assert "secret" not in repr(o)
    assert Outlets.from_env({}) == Outlets()
    with pytest.raises(InputError, match="RESTORE_DRILLS_NOTIFY_ON: unknown event"):
        Outlets.from_env({"RESTORE_DRILLS_NOTIFY_ON": "failures"})
    with pytest.raises(InputError, match="RESTORE_DRILLS_WEBHOOK_URL must be an http"):
        Outlets.from_env({"RESTORE_DRILLS_WEBHOOK_URL": "file:///etc/passwd"})


def test_outlets_that_could_never_deliver_are_refused_before_the_drill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drills.errors import PreflightError

    Outlets(metrics_textfile=tmp_path / "drills.prom").preflight()  # a file in an existing directory: fine
    with pytest.raises(PreflightError, match="does not exist or is not writable"):
        Outlets(metrics_textfile=tmp_path / "missing" / "drills.prom").preflight()
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)  # as if the extra were not installed
    with pytest.raises(PreflightError, match=r"pip install 'restore-drills\[metrics\]'"):
        Outlets(pushgateway_url="http://push:9091").preflight()
    Outlets(webhook_url="https://hooks.example/x").preflight()  # notifications need no extra
