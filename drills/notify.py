"""Tell people when a drill needs them: a Slack-compatible webhook and Amazon SNS.

A notification is sent on failure and on an RTO regression (``RESTORE_DRILLS_NOTIFY_ON`` can add
``passed``); :func:`message` renders the text (pure), the senders below it do the I/O. Neither
sender decides anything about the drill: :mod:`drills.deliver` catches their errors and records them,
because a broken chat integration must never turn a good restore into a failed drill.

A webhook URL is a bearer secret (Slack's path *is* the token): only :func:`drills.metrics.public_url`
(scheme and host) ever reaches a log line or a record.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from drills.outcome import Outcome
from drills.scrub import scrub

__all__ = ["doctor_message", "message", "post_text", "publish_text", "send_sns", "send_webhook", "subject", "wanted"]

SUBJECT_MAX = 100  # SNS rejects longer subjects


def wanted(o: Outcome, on: frozenset[str]) -> list[str]:
    """Why this outcome is worth a notification under the ``on`` policy; empty: stay quiet."""
    why = []
    if o.verdict != "passed" and "failure" in on:
        why.append("failure")
    if o.regressed and "regression" in on:
        why.append("regression")
    if o.verdict == "passed" and "passed" in on and not why:
        why.append("passed")
    return why


def subject(o: Outcome) -> str:
    tag = " (RTO regression)" if o.regressed else ""
    return f"restore drill {o.runbook}: {o.verdict.upper()}{tag}"[:SUBJECT_MAX]


def _s(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds:.3f}s"


def message(o: Outcome) -> str:
    """Plain text that reads well in Slack, in an e-mail from SNS and in a terminal."""
    lines = [
        f"{subject(o)} — run {o.run_id} ({o.engine}, {o.kind})",
        f"RTO {_s(o.rto_seconds)} (objective {o.rto_objective_seconds:g}s)"
        + (f", RPO {_s(o.rpo_seconds)} (objective {o.rpo_objective_seconds:g}s)" if o.rpo_objective_seconds else ""),
    ]
    lines += [f"- {r}" for r in o.reasons[:5]]
    reg = o.regression or {}
    if reg.get("flag"):
        lines.append(
            f"RTO regression: {reg.get('delta_pct', 0):+d} % against the median of the last "
            f"{reg.get('baseline_drills')} passed drills ({reg.get('baseline_rto_ms', 0) / 1000:.3f}s), "
            f"threshold {reg.get('threshold_ms', 0) / 1000:.3f}s"
        )
    trend = reg.get("trend") or {}
    if trend.get("direction") in ("increasing", "decreasing"):
        lines.append(f"trend: {trend['direction']}, {trend.get('slope_ms_per_day', 0) / 1000:+.1f}s/day "
                     f"(Mann-Kendall p={trend.get('p_value')})")  # fmt: skip
    projection = reg.get("projection") or {}
    if projection.get("summary"):
        lines.append(str(projection["summary"]))
    if o.evidence:
        lines.append(f"evidence: {o.evidence}")
    return scrub("\n".join(lines))


def send_webhook(o: Outcome, url: str, *, timeout: float = 10.0) -> int:
    """POST the drill's message as ``{"text": ...}``; see :func:`post_text`."""
    return post_text(message(o), url, timeout=timeout)


def post_text(text: str, url: str, *, timeout: float = 10.0) -> int:
    """POST ``{"text": ...}`` (what Slack, Mattermost and Teams' Slack-compatible hooks accept).

    Returns the HTTP status; raises on a refused connection, a timeout or a status >= 300.
    """
    if not url.startswith(("https://", "http://")):
        raise ValueError("the webhook URL must start with https:// or http://")
    body = json.dumps({"text": scrub(text)}).encode()
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "restore-drills"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the scheme is checked above
        status: int = resp.status
    if status >= 300:
        raise OSError(f"HTTP {status}")
    return status


def send_sns(o: Outcome, topic_arn: str, client: Any) -> str:
    """Publish to an SNS topic; returns the message id."""
    return publish_text(subject(o), message(o), topic_arn, client)


def publish_text(title: str, text: str, topic_arn: str, client: Any) -> str:
    """Publish ``text`` under ``title`` (cut to SNS's 100 characters); returns the message id."""
    resp = client.publish(TopicArn=topic_arn, Subject=title[:SUBJECT_MAX], Message=scrub(text))
    return str(resp["MessageId"])


def doctor_message(findings: list[dict[str, Any]], runbooks: int) -> tuple[str, str]:
    """(subject, text) for ``drill doctor --notify``: one line per finding, as the terminal shows them."""
    title = f"restore drills: {len(findings)} finding(s) need a human"
    lines = [f"{title} ({runbooks} runbook(s) checked)"]
    lines += [f"- {f.get('check')}: {f.get('message')}" for f in findings[:20]]
    if len(findings) > 20:
        lines.append(f"... and {len(findings) - 20} more (drill doctor)")
    return title, "\n".join(lines)
