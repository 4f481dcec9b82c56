"""The published record schema is the model's, and the model reads what drills write and refuses what they must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drills.errors import EvidenceError
from drills.record_model import DrillRecord, record_schema

ROOT = Path(__file__).resolve().parents[2]


def test_docs_record_schema_is_the_models_schema() -> None:
    published = (ROOT / "docs" / "record.schema.json").read_text()
    assert published == record_schema(), "regenerate: python -c 'from drills.record_model import record_schema; ...'"
    schema = json.loads(published)
    assert {"drill", "runbook", "results"} <= set(schema["required"])
    assert schema["$defs"]["Results"]["properties"]["verdict"]["enum"] == ["passed", "failed", "aborted"]


def minimal(**results: object) -> dict[str, object]:
    return {"drill": {"id": "r1"}, "runbook": {"name": "orders"}, "results": {"verdict": "passed", **results}}


def test_a_record_reads_as_types() -> None:
    rec = DrillRecord.parse(
        minimal(achieved_rto_ms=61_000, rto_phases_ms={"restore": 40_000, "validate": 21_000})
        | {"chain": {"seq": 4, "id": "runbook:orders"}, "future_field": {"kept": True}}
    )
    assert rec.results.achieved_rto_ms == 61_000 and list(rec.results.rto_phases_ms) == ["restore", "validate"]
    assert rec.chain is not None and rec.chain.seq == 4
    assert rec.model_extra == {"future_field": {"kept": True}}  # a newer tool's fields survive


@pytest.mark.parametrize(
    ("record", "where"),
    [
        (minimal(verdict="maybe"), "results.verdict"),
        (minimal(achieved_rto_ms="fast"), "results.achieved_rto_ms"),
        ({"drill": {"id": "r1"}, "results": {"verdict": "passed"}}, "runbook"),
        (minimal() | {"chain": {"seq": "three"}}, "chain.seq"),
        (minimal() | {"validation": {"findings": [{"check": "x", "passed": True}]}}, "validation.findings.0.validator"),
    ],
)
def test_a_record_that_does_not_fit_names_the_field(record: dict[str, object], where: str) -> None:
    with pytest.raises(EvidenceError, match=f"at {where.replace('.', '[.]')}"):
        DrillRecord.parse(record)
