"""What a finished drill tells the outside world: the facts metrics and notifications are made of.

Built once at the end of a run (:func:`drills.deliver.outcome_of`), immutable, free of secrets, and
independent of how the drill ran, so :mod:`drills.metrics` and :mod:`drills.notify` stay pure
renderings that tests feed directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome"]


@dataclass(frozen=True)
class Outcome:
    run_id: str
    runbook: str
    engine: str  # postgres, mariadb, mysql, aurora-postgresql... (the label dashboards group by)
    kind: str  # the runbook's source.kind
    verdict: str  # passed | failed
    finished_at: float  # Unix seconds
    rto_seconds: float | None
    rto_objective_seconds: float
    rpo_seconds: float | None
    rpo_objective_seconds: float | None
    last_success_at: float | None  # Unix seconds of the newest passed drill, this one included
    reasons: tuple[str, ...] = ()
    regression: dict[str, Any] | None = None
    evidence: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def regressed(self) -> bool:
        return bool(self.regression and self.regression.get("flag"))
