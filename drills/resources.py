"""Resources a drill creates, as plain data.

A resource is journaled *before* the call that creates it, with the
identifier the run chose, so that after a crash ``drill teardown RUN_ID`` can
remove it from the journal alone. Teardown functions therefore take a
:class:`Resource` and must be idempotent (an absent resource is "already gone").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Resource", "TeardownResult"]


@dataclass(frozen=True)
class Resource:
    kind: str  # e.g. "postgres-server", "rds-instance", "ec2-security-group"
    id: str  # the identifier the run chose (data dir, DB identifier...)
    backend: str  # the backend that knows how to remove it
    attrs: dict[str, Any] = field(default_factory=dict)  # JSON-able, never a secret

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "backend": self.backend, "attrs": dict(self.attrs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resource:
        return cls(kind=d["kind"], id=d["id"], backend=d["backend"], attrs=dict(d.get("attrs", {})))


@dataclass(frozen=True)
class TeardownResult:
    resource: Resource
    deleted: bool  # gone now (deleted by us, or already absent)
    detail: str = ""
    verified_at: str | None = None  # ISO time the absence was confirmed

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.resource.kind,
            "id": self.resource.id,
            "deleted": self.deleted,
            "detail": self.detail,
            "verified_at": self.verified_at,
        }
