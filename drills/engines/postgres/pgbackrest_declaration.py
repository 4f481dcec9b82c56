"""The ``pgbackrest`` backend's declaration: ``kind: pgbackrest``, a stanza in a pgBackRest repository.

Pure pydantic, kept apart from :mod:`drills.engines.postgres.pgbackrest` because the runbook
loader reads every declaration and must stay light (the backend imports the PostgreSQL server
helpers, ~80 ms). Options the drill itself sets (where to restore, which set, the target) cannot
be passed through: a runbook must not be able to point the restore at a production data directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drills.backends.declare import BackendDeclaration, SourceModel, TargetTime, aware_target_time

__all__ = ["DECLARATION", "DRILL_OWNED_OPTIONS", "PgbackrestSource"]

# set by the drill on every call; a pass-through option naming one is refused
DRILL_OWNED_OPTIONS = frozenset(
    {
        "stanza", "config", "no-config", "repo1-path", "pg1-path", "set", "type", "target", "target-action",
        "target-timeline", "target-exclusive", "process-max", "delta", "force", "archive-mode", "lock-path",
        "log-path", "log-level-file", "log-level-console", "log-level-stderr", "output", "spool-path",
        "archive-async", "recovery-option", "db-include", "link-all", "link-map", "tablespace-map",
        "tablespace-map-all", "exec-id", "cmd",
    }
)  # fmt: skip
_OPTION = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_SECRET = re.compile(r"(secret|cipher-pass|token|-key$)")


class PgbackrestSource(SourceModel):
    kind: Literal["pgbackrest"]
    stanza: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The pgBackRest stanza to restore.")
    config: Path | None = Field(default=None, description="A pgbackrest.conf describing the repository.")
    repo_path: Path | None = Field(
        default=None, description="Inline repository instead of `config`: repo1-path (posix, or the bucket prefix)."
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra pgBackRest options passed as --NAME=VALUE (e.g. repo1-type: s3, repo1-s3-bucket). "
        "Secrets go in the environment (PGBACKREST_REPO1_S3_KEY_SECRET), never in a runbook.",
    )
    set: str | None = Field(default=None, description="Backup set label; default: the newest set before the target.")
    target_time: TargetTime = Field(description="Recovery target (timezone-aware) or `latest`.")
    verify: bool = Field(default=False, description="Run `pgbackrest verify` over the repository before restoring.")
    wal_verify: Literal["headers", "full"] = Field(
        default="headers", description="WAL checks before recovery: page headers, or `full` (record CRCs)."
    )
    process_max: int = Field(default=2, ge=1, le=64, strict=True, description="pgbackrest restore --process-max.")
    database: str = Field(default="postgres", description="Database the validators connect to.")
    user: str = Field(default="postgres", description="A superuser of the backed-up cluster.")

    _tz = field_validator("target_time")(aware_target_time)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _OPTION.match(name):
                raise ValueError(f"{name!r} is not a pgBackRest option name (lower-case words joined by -)")
            if name in DRILL_OWNED_OPTIONS:
                raise ValueError(f"{name!r} is set by the drill itself and cannot be passed through")
            if _SECRET.search(name):
                raise ValueError(
                    f"{name!r} looks like a secret: put it in the environment as "
                    f"PGBACKREST_{name.upper().replace('-', '_')}, not in a runbook"
                )
        return v

    @model_validator(mode="after")
    def _one_repository(self) -> PgbackrestSource:
        if (self.config is None) == (self.repo_path is None):
            raise ValueError("give exactly one of config (a pgbackrest.conf) or repo_path (an inline repository)")
        return self


DECLARATION = BackendDeclaration(
    name="pgbackrest",
    kinds={"pgbackrest": PgbackrestSource},
    factory="drills.engines.postgres.pgbackrest:create",
    check_backup="drills.engines.postgres.pgbackrest:check_backup",
)
