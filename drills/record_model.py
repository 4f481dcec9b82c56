"""The drill record (the evidence predicate) as types: what `record.py` writes and every reader reads.

The record is signed JSON, and auditors read it without this tool, so its
shape is published: ``docs/record.schema.json`` is this model's JSON Schema
(a test keeps the two equal). The writer validates each record against the
model before signing, so a record that drifted from the schema fails its
drill loudly instead of reaching an auditor. Readers (history, the ledger,
packs, the doctor, reports) parse with :meth:`DrillRecord.parse` and use
attributes instead of chains of ``.get``.

Typed here is what readers rely on. Sections whose content depends on the
backend (``source``, ``recovery_point``, ``preflight_facts``, ``target``,
``recovery``) stay open objects, described in docs/evidence.md. Unknown
fields are kept (``extra="allow"``): a newer tool's record still reads.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drills.errors import EvidenceError

__all__ = ["DrillRecord", "record_schema"]

Verdict = Literal["passed", "failed", "aborted"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class DrillInfo(_Part):
    id: str = Field(description="Run id; the evidence file is named after it.")
    type: str | None = Field(default=None, description="What was restored: pitr, snapshot, dump...")
    trigger: str | None = None
    started_at: str | None = Field(default=None, description="ISO 8601 UTC.")
    finished_at: str | None = Field(default=None, description="ISO 8601 UTC, when the record was signed.")
    initiated_by: str | None = None
    host: str | None = None
    executor: dict[str, Any] | None = Field(default=None, description="The tool and version that ran the drill.")


class RunbookInfo(_Part):
    name: str
    sha256: str | None = Field(default=None, description="SHA-256 of the runbook file the drill ran.")
    path: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    schedule_every_seconds: int | None = Field(default=None, description="The runbook's required cadence.")


class Reason(_Part):
    kind: str
    message: str | None = None
    check: str | None = None
    state: str | None = None


class Results(_Part):
    verdict: Verdict
    rto_objective_ms: int | None = None
    rpo_objective_ms: int | None = None
    achieved_rto_ms: int | None = Field(default=None, description="Restore request until validated.")
    rto_phases_ms: dict[str, int] = Field(default_factory=dict, description="Per state, in run order.")
    rto_met: bool = False
    achieved_rpo_ms: int | None = None
    rpo_met: bool | None = None
    rpo_method: str | None = None
    rto_definition: str | None = Field(default=None, description="What the achieved RTO measures, in words.")
    reasons: list[Reason | str] = Field(default_factory=list, description="Why the drill did not pass.")


class Finding(_Part):
    validator: str
    check: str
    passed: bool
    expected: Any = None
    actual: Any = None
    detail: str | None = None
    query_sha256: str | None = None
    duration_ms: int | None = None


class Validation(_Part):
    passed: bool = False
    duration_ms: int | None = None
    newest_commit_at: str | None = None
    findings: list[Finding] = Field(default_factory=list)


class TimelineEntry(_Part):
    state: str
    attempt: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: int | None = None
    outcome: str | None = None
    error: str | None = None


class Mark(_Part):
    name: str
    at: str
    source: str | None = None
    precision_ms: int | None = None


class Teardown(_Part):
    all_deleted: bool = False
    kept_until_expiry: bool | None = None
    resources: list[dict[str, Any]] = Field(default_factory=list)
    outstanding: list[dict[str, Any]] = Field(
        default_factory=list, description="An aborted run's resources not confirmed removed."
    )
    verified_at: str | None = None


class Chain(_Part):
    id: str | None = None
    seq: int
    prev_envelope_sha256: str | None = None
    prev_head_sha256: str | None = None


class WaitForecast(_Part):
    expected_ms: int = Field(description="Median of the past waits, restore request to available.")
    spread_ms: int = Field(description="1.4826 x their median absolute deviation (at least 15 s).")
    window_ms: list[int] = Field(description="Where polls were dense: [start, end] after the request.")
    window_interval_ms: int = Field(description="The poll interval inside that window.")


class RestoreWait(_Part):
    """How an AWS restore's wait was paced: it decides how precise the "available" mark can be."""

    policy: Literal["plain", "forecast"] = Field(
        description="plain: interval grows with the wait (10-150 s); forecast: dense around the finish "
        "the runbook's history predicts (docs/aws.md)."
    )
    history_drills: int = Field(description="Past trusted drills of this runbook whose wait was measured.")
    forecast: WaitForecast | None = None


class DrillRecord(_Part):
    """One drill: the predicate of its signed in-toto statement."""

    schema_version: int | None = None
    drill: DrillInfo
    runbook: RunbookInfo
    objectives: dict[str, int | None] | None = None
    source: dict[str, Any] | None = None
    recovery_point: dict[str, Any] | None = None
    recovery: dict[str, Any] | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    marks: list[Mark] = Field(default_factory=list)
    results: Results
    validation: Validation = Field(default_factory=Validation)
    deviations: list[dict[str, Any]] = Field(default_factory=list)
    isolation_checks: list[dict[str, Any]] = Field(default_factory=list, description="Isolation facts read back.")
    teardown: Teardown = Field(default_factory=Teardown)
    chain: Chain | None = None
    regression: dict[str, Any] | None = None
    restore_wait: RestoreWait | None = Field(default=None, description="AWS backends only.")
    evidence_trail: dict[str, Any] | None = Field(
        default=None, description="Trusted keys, verified records and deviations found at this append."
    )
    interrupted: bool = False

    @classmethod
    def parse(cls, predicate: object) -> DrillRecord:
        """The typed record, or :class:`EvidenceError` naming the first field that does not fit."""
        try:
            return cls.model_validate(predicate)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise EvidenceError(f"the drill record does not fit its schema at {where}: {first['msg']}") from None

    @property
    def finished(self) -> datetime | None:
        text = self.drill.finished_at or self.drill.started_at
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def record_schema() -> str:
    """The JSON Schema published for auditors (docs/record.schema.json)."""
    schema = DrillRecord.model_json_schema()
    schema["$id"] = "https://restore-drills.dev/drill/v1/record.schema.json"
    schema["title"] = "restore-drills drill record (predicate of https://restore-drills.dev/drill/v1)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
