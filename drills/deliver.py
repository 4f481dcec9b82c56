"""The end of a run, for the outside world: metrics and notifications, never at the drill's expense.

Where they go is configured by the environment (so a cron line or a CI job sets it once for every
runbook) and ``drill run --metrics-textfile``:

=====================================  ==============================================================
``RESTORE_DRILLS_METRICS_TEXTFILE``    node_exporter textfile: a ``.prom`` file, or a directory
``RESTORE_DRILLS_PUSHGATEWAY_URL``     Pushgateway base URL (``https://user:pass@push.example:9091``)
``RESTORE_DRILLS_CLOUDWATCH_NAMESPACE``  CloudWatch namespace for PutMetricData (e.g. ``RestoreDrills``)
``RESTORE_DRILLS_WEBHOOK_URL``         Slack-compatible incoming webhook (a secret: never logged)
``RESTORE_DRILLS_SNS_TOPIC_ARN``       SNS topic for notifications
``RESTORE_DRILLS_NOTIFY_ON``           comma list of ``failure``, ``regression``, ``passed``
                                       (default ``failure,regression``)
=====================================  ==============================================================

Every delivery is attempted after the evidence is signed (a notification links the evidence), each
on its own: a 500, a refused connection, a timeout or a missing permission is caught, logged and
recorded in the run journal (event ``delivery``) and in the run result (``deliveries`` in
``drill run --json``), and the drill's verdict and exit code stay what the restore earned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from drills.errors import InputError, PreflightError
from drills.metrics import public_url
from drills.outcome import Outcome
from drills.scrub import scrub

__all__ = ["ENV", "NOTIFY_EVENTS", "Outlets", "deliver", "deliver_run", "deliver_text", "outcome_of"]

log = structlog.get_logger("drills.deliver")

ENV = {
    "metrics_textfile": "RESTORE_DRILLS_METRICS_TEXTFILE",
    "pushgateway_url": "RESTORE_DRILLS_PUSHGATEWAY_URL",
    "cloudwatch_namespace": "RESTORE_DRILLS_CLOUDWATCH_NAMESPACE",
    "webhook_url": "RESTORE_DRILLS_WEBHOOK_URL",
    "sns_topic_arn": "RESTORE_DRILLS_SNS_TOPIC_ARN",
    "notify_on": "RESTORE_DRILLS_NOTIFY_ON",
}
NOTIFY_EVENTS = frozenset({"failure", "regression", "passed"})


@dataclass(frozen=True)
class Outlets:
    metrics_textfile: Path | None = None
    pushgateway_url: str | None = field(default=None, repr=False)  # may carry basic-auth credentials
    cloudwatch_namespace: str | None = None
    webhook_url: str | None = field(default=None, repr=False)  # the path is the token
    sns_topic_arn: str | None = None
    notify_on: frozenset[str] = frozenset({"failure", "regression"})
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, metrics_textfile: Path | None = None) -> Outlets:
        env = os.environ if environ is None else environ

        def get(key: str) -> str | None:
            return (env.get(ENV[key]) or "").strip() or None

        textfile = metrics_textfile or (Path(t) if (t := get("metrics_textfile")) else None)
        words = frozenset(w.strip() for w in (get("notify_on") or "failure,regression").split(",") if w.strip())
        if words - NOTIFY_EVENTS:
            raise InputError(
                f"{ENV['notify_on']}: unknown event(s) {', '.join(sorted(words - NOTIFY_EVENTS))}",
                hint=f"use a comma list of {', '.join(sorted(NOTIFY_EVENTS))}",
            )
        for key in ("pushgateway_url", "webhook_url"):
            url = get(key)
            if url and not url.startswith(("http://", "https://")):
                raise InputError(f"{ENV[key]} must be an http:// or https:// URL", hint="fix the variable")
        return cls(
            metrics_textfile=textfile,
            pushgateway_url=get("pushgateway_url"),
            cloudwatch_namespace=get("cloudwatch_namespace"),
            webhook_url=get("webhook_url"),
            sns_topic_arn=get("sns_topic_arn"),
            notify_on=words,
        )

    @property
    def configured(self) -> bool:
        return bool(
            self.metrics_textfile or self.pushgateway_url or self.cloudwatch_namespace
            or self.webhook_url or self.sns_topic_arn
        )  # fmt: skip

    def preflight(self) -> None:
        """Refuse, before anything starts, what could never be delivered (no library, no directory)."""
        if self.metrics_textfile is not None or self.pushgateway_url:
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise PreflightError(
                    "Prometheus metrics need prometheus_client", hint="pip install 'restore-drills[metrics]'"
                ) from None
        if self.metrics_textfile is not None:
            where = self.metrics_textfile if self.metrics_textfile.is_dir() else self.metrics_textfile.parent
            if not where.is_dir() or not os.access(where, os.W_OK):
                raise PreflightError(
                    f"metrics textfile directory {where} does not exist or is not writable",
                    hint="create it, or point --metrics-textfile elsewhere",
                )


def _stamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def outcome_of(d: Any, verdict: str, evidence: Path | None, evidence_dir: Path, trusted: Sequence[Any] = ()) -> Outcome:
    """The facts of a finished :class:`~drills.machine.Drill` (typed Any: machine must not import us).

    ``trusted``: the keys whose records count as history (the last success); none, no history."""
    from drills.history import past_drills
    from drills.record import failure_reasons

    rb = d.loaded.runbook
    m = d.measurement
    now = d.clock.now().timestamp()
    src = d.preflight.source if d.preflight else {}
    engine = str(src.get("engine") or rb.source.kind.split("-")[0])
    last_success = now if verdict == "passed" else None
    if last_success is None:
        passed = [p.finished_at for p in past_drills(evidence_dir, rb.name, trusted) if p.verdict == "passed"]
        last_success = max((s for s in map(_stamp, passed) if s is not None), default=None)
    return Outcome(
        run_id=d.run_id,
        runbook=rb.name,
        engine=engine,
        kind=rb.source.kind,
        verdict=verdict,
        finished_at=now,
        rto_seconds=m.achieved_rto_ms / 1000 if m and m.achieved_rto_ms is not None else None,
        rto_objective_seconds=float(rb.objectives.rto_seconds),
        rpo_seconds=m.achieved_rpo_ms / 1000 if m and m.achieved_rpo_ms is not None else None,
        rpo_objective_seconds=float(rb.objectives.rpo_seconds) if rb.objectives.rpo_seconds is not None else None,
        last_success_at=last_success,
        reasons=tuple(failure_reasons(d)),
        regression=d.regression,
        evidence=str(evidence) if evidence else None,
    )


def _client(session: Any, service: str, region: str | None = None) -> Any:
    """A client whose calls go through the one AWS call wrapper (:mod:`drills.aws.clients`): throttling and
    5xx retried as everywhere else, within a budget small enough that a notification never holds the run."""
    from drills.aws.clients import aws_client

    return aws_client(
        service, session=session, region=region, budget_seconds=10.0, attempts=3, connect_timeout=5, read_timeout=10
    )


def _attempts(o: Outcome, outlets: Outlets, session: Any) -> list[tuple[str, str, Callable[[], Any]]]:
    """(channel, public target, send) for everything configured and wanted."""
    from drills import metrics, notify

    out: list[tuple[str, str, Callable[[], Any]]] = []
    if outlets.metrics_textfile is not None:
        path = outlets.metrics_textfile
        out.append(("prometheus-textfile", str(path), lambda: metrics.write_textfile(o, path)))
    if outlets.pushgateway_url:
        url = outlets.pushgateway_url
        out.append(
            ("pushgateway", public_url(url), lambda: metrics.push_gateway(o, url, timeout=outlets.timeout_seconds))
        )
    if outlets.cloudwatch_namespace:
        ns = outlets.cloudwatch_namespace
        out.append(("cloudwatch", ns, lambda: metrics.push_cloudwatch(o, ns, _client(session, "cloudwatch"))))
    if notify.wanted(o, outlets.notify_on):
        if outlets.webhook_url:
            hook = outlets.webhook_url
            out.append(
                ("webhook", public_url(hook), lambda: notify.send_webhook(o, hook, timeout=outlets.timeout_seconds))
            )
        if outlets.sns_topic_arn:
            arn = outlets.sns_topic_arn
            region = arn.split(":")[3] if arn.count(":") >= 5 else None
            out.append(("sns", arn, lambda: notify.send_sns(o, arn, _client(session, "sns", region))))
    return out


def _clean(text: str, outlets: Outlets) -> str:
    for secret in (outlets.webhook_url, outlets.pushgateway_url):
        if secret:
            text = text.replace(secret, public_url(secret))
    return scrub(text)


def deliver(o: Outcome, outlets: Outlets, journal: Any = None, session: Any = None) -> list[dict[str, Any]]:
    """Attempt every configured delivery; return (and journal) one record each. Never raises."""
    from drills import notify

    return _attempt_all(_attempts(o, outlets, session), outlets, journal, notify.wanted(o, outlets.notify_on))


def deliver_text(title: str, text: str, outlets: Outlets, session: Any = None) -> list[dict[str, Any]]:
    """Send a text (``drill doctor --notify``) to the configured webhook and SNS topic. Never raises."""
    from drills import notify

    attempts: list[tuple[str, str, Callable[[], Any]]] = []
    if outlets.webhook_url:
        hook = outlets.webhook_url
        attempts.append(
            ("webhook", public_url(hook), lambda: notify.post_text(text, hook, timeout=outlets.timeout_seconds))
        )
    if outlets.sns_topic_arn:
        arn = outlets.sns_topic_arn
        region = arn.split(":")[3] if arn.count(":") >= 5 else None
        attempts.append(("sns", arn, lambda: notify.publish_text(title, text, arn, _client(session, "sns", region))))
    return _attempt_all(attempts, outlets, None, ["doctor"])


def _attempt_all(
    attempts: list[tuple[str, str, Callable[[], Any]]], outlets: Outlets, journal: Any, why: list[str]
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for channel, target, send in attempts:
        rec: dict[str, Any] = {"channel": channel, "target": target}
        if channel in ("webhook", "sns"):
            rec["because"] = why
        try:
            result = send()
            rec |= {"ok": True, "detail": str(result) if channel in ("sns", "webhook") else None}
            log.info("delivered", channel=channel, target=target)
        except Exception as exc:  # a notification never fails the drill: every error is recorded
            error = _clean(f"{type(exc).__name__}: {exc}", outlets)
            rec |= {"ok": False, "error": error}
            log.warning("delivery_failed", channel=channel, target=target, error=error)
        records.append(rec)
        if journal is not None:
            journal.append("delivery", **rec)
    return records


def deliver_run(
    d: Any,
    *,
    verdict: str,
    evidence: Path | None,
    evidence_dir: Path,
    outlets: Outlets,
    session: Any = None,
    trusted: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """The hook at the end of :func:`drills.api.run_drill`: nothing configured, nothing done; never raises."""
    if not outlets.configured:
        return []
    try:
        outcome = outcome_of(d, verdict, evidence, evidence_dir, trusted)
    except Exception as exc:  # the drill is over and its evidence written: this must not change its result
        rec = {"channel": "all", "target": "", "ok": False, "error": scrub(f"{type(exc).__name__}: {exc}")}
        log.warning("delivery_failed", **rec)
        d.journal.append("delivery", **rec)
        return [rec]
    return deliver(outcome, outlets, d.journal, session)
