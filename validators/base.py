"""What every validator returns: findings, one per thing checked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Finding", "ValidationReport"]


@dataclass(frozen=True)
class Finding:
    """One check: what was checked, what was expected, what was found.

    ``expected`` and ``actual`` are JSON-able values; ``query_sha256`` is the
    digest of the SQL that produced ``actual`` so an auditor can tie the
    finding to the exact query without the query text in the record.
    """

    validator: str  # schema | row_counts | smoke | freshness
    check: str  # e.g. "table public.orders", "orders rows", "nothing after target"
    passed: bool
    expected: Any = None
    actual: Any = None
    detail: str = ""
    query_sha256: str | None = None
    duration_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ValidationReport:
    """All findings of a validation run plus what measurement needs from it."""

    findings: tuple[Finding, ...]
    newest_commit_at: str | None  # ISO-8601 UTC; the freshness probe's answer
    freshness_method: str | None
    duration_ms: int

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)
