"""Drill metrics where teams already look: Prometheus text format and Amazon CloudWatch.

Names and labels (docs/metrics.md), one series per runbook and engine:

=============================================  =====================================================
``restore_drill_rto_seconds``                  achieved RTO (absent when not measured)
``restore_drill_rto_objective_seconds``        the runbook's RTO objective
``restore_drill_rpo_seconds``                  achieved RPO (absent when not measured)
``restore_drill_last_success_timestamp_seconds``  newest passed drill (absent if none ever passed)
``restore_drill_last_run_timestamp_seconds``   when this drill finished, whatever its verdict
``restore_drill_verdict``                      1 for the verdict this drill had, 0 for the other
                                               (label ``verdict``: passed, failed)
``restore_drill_regression``                   1 when the RTO was flagged against its baseline
=============================================  =====================================================

Rendering is pure (:func:`render`); the writers below it are the only I/O: an atomic
textfile-collector file, a Pushgateway push (a PUT replacing the runbook's group, so a metric
that disappears really disappears) and CloudWatch ``PutMetricData``. ``prometheus_client`` is an
optional extra (``pip install 'restore-drills[metrics]'``), imported only here and lazily.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drills.outcome import Outcome

__all__ = ["METRICS", "cloudwatch_data", "push_cloudwatch", "push_gateway", "render", "write_textfile"]

LABELS = ("runbook", "engine")
METRICS = {
    "restore_drill_rto_seconds": "Achieved RTO of the latest drill: restore request until all validators passed.",
    "restore_drill_rto_objective_seconds": "RTO objective of the runbook.",
    "restore_drill_rpo_seconds": "Achieved RPO of the latest drill.",
    "restore_drill_last_success_timestamp_seconds": "Unix time the newest passed drill finished.",
    "restore_drill_last_run_timestamp_seconds": "Unix time the latest drill finished, whatever its verdict.",
    "restore_drill_verdict": "1 for the verdict of the latest drill, 0 for the other.",
    "restore_drill_regression": "1 when the latest RTO was flagged against the robust baseline of recent drills.",
}
VERDICTS = ("passed", "failed")


def _values(o: Outcome) -> dict[str, float | None]:
    return {
        "restore_drill_rto_seconds": o.rto_seconds,
        "restore_drill_rto_objective_seconds": o.rto_objective_seconds,
        "restore_drill_rpo_seconds": o.rpo_seconds,
        "restore_drill_last_success_timestamp_seconds": o.last_success_at,
        "restore_drill_last_run_timestamp_seconds": o.finished_at,
        "restore_drill_regression": 1.0 if o.regressed else 0.0,
    }


def _registry(o: Outcome) -> Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    for name, value in _values(o).items():
        if value is not None:  # unknown is absent, never 0: 0 s RTO would look excellent
            Gauge(name, METRICS[name], LABELS, registry=registry).labels(o.runbook, o.engine).set(value)
    verdict = Gauge("restore_drill_verdict", METRICS["restore_drill_verdict"], (*LABELS, "verdict"), registry=registry)
    for v in VERDICTS:
        verdict.labels(o.runbook, o.engine, v).set(1.0 if o.verdict == v else 0.0)
    return registry


def render(o: Outcome) -> str:
    """The Prometheus text exposition of one drill's outcome."""
    from prometheus_client import generate_latest

    text: str = generate_latest(_registry(o)).decode()
    return text


def write_textfile(o: Outcome, path: Path) -> Path:
    """Write for node_exporter's textfile collector, atomically: a scrape never sees half a file.

    ``path`` is a file, or a directory that gets ``restore_drill_<runbook>.prom`` (one file per
    runbook, so runbooks sharing the collector directory do not overwrite each other).
    """
    target = path / f"restore_drill_{_safe(o.runbook)}.prom" if path.is_dir() else path
    data = render(o).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # the collector ignores names not ending in .prom
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def public_url(url: str) -> str:
    """The URL without credentials, path or query: what logs and records may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "/…" if parts.path not in ("", "/") else "", "", ""))


def push_gateway(o: Outcome, url: str, *, timeout: float = 10.0) -> None:
    """PUT the outcome to a Pushgateway, grouped by job ``restore_drill`` and the runbook.

    Basic-auth credentials may be given in the URL (``https://user:pass@host``); they are sent as a
    header, never in the logged URL.
    """
    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    clean = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname),
                        parts.path, parts.query, ""))  # fmt: skip
    user, password = parts.username, parts.password

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes) -> Any:
        if user is not None:
            return basic_auth_handler(url, method, timeout, headers, data, user, password or "")
        return default_handler(url, method, timeout, headers, data)

    push_to_gateway(
        clean, job="restore_drill", grouping_key={"runbook": o.runbook}, registry=_registry(o), timeout=timeout,
        handler=handler,
    )  # fmt: skip


def cloudwatch_data(o: Outcome) -> list[dict[str, Any]]:
    """``MetricData`` for PutMetricData: the same names, dimensions ``Runbook`` and ``Engine``.

    CloudWatch has no label sets, so ``restore_drill_verdict`` is one series: 1 passed, 0 failed.
    """
    from datetime import UTC, datetime

    dims = [{"Name": "Runbook", "Value": o.runbook}, {"Name": "Engine", "Value": o.engine}]
    at = datetime.fromtimestamp(o.finished_at, UTC)
    units = {"restore_drill_regression": "None", "restore_drill_verdict": "None"}
    values = _values(o) | {"restore_drill_verdict": 1.0 if o.verdict == "passed" else 0.0}
    return [
        {"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": float(value),
         "Unit": units.get(name, "Seconds")}
        for name, value in values.items()
        if value is not None
    ]  # fmt: skip


def push_cloudwatch(o: Outcome, namespace: str, client: Any) -> None:
    client.put_metric_data(Namespace=namespace, MetricData=cloudwatch_data(o))
