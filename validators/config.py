"""Validator settings as they appear in a runbook (pydantic, immutable).

These models live in the validators package so that the runbook loader can
embed them while validators never import the runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "FreshnessConfig",
    "RowCountRule",
    "SchemaConfig",
    "SmokeQuery",
    "ValidatorsConfig",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Numbers a runbook gives end up in signed evidence, whose JSON keeps integers exact only below 2**53.
MAX_EXACT = 2**53 - 1


class SchemaConfig(_Frozen):
    baseline: Path = Field(
        description="Baseline JSON captured with `drill baseline capture`.", json_schema_extra={"x-must-exist": True}
    )  # the runbook loader checks it exists (drills.backends.declare.MustExist: a schema keyword, no import)
    schemas: tuple[str, ...] | None = Field(
        default=None, description="Schemas (PostgreSQL) or databases (MySQL) to compare; default: all user ones."
    )
    ignore: tuple[str, ...] = Field(default=(), description="Object names to leave out of the comparison.")


class RowCountRule(_Frozen):
    equals: int | None = Field(default=None, ge=0, le=MAX_EXACT, strict=True)
    min: int | None = Field(default=None, ge=0, le=MAX_EXACT, strict=True)
    max: int | None = Field(default=None, ge=0, le=MAX_EXACT, strict=True)
    within_pct: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        strict=True,
        allow_inf_nan=False,
        description="Allowed deviation from the baseline count, percent.",
    )
    equals_baseline: bool = False

    @model_validator(mode="after")
    def _some_rule(self) -> RowCountRule:
        if (
            self.equals is None
            and self.min is None
            and self.max is None
            and self.within_pct is None
            and not self.equals_baseline
        ):
            raise ValueError("give at least one of equals, min, max, within_pct, equals_baseline")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


Scalar = int | float | str | bool | None


class SmokeQuery(_Frozen):
    name: str = Field(min_length=1)
    sql: str = Field(min_length=1, description="One query returning one value; %(target_time)s is available.")
    expect: Scalar = Field(default=None, description="The value the query must return.")
    op: Literal["==", "!=", "<", "<=", ">", ">="] = "=="

    @field_validator("expect")
    @classmethod
    def _exact(cls, v: Scalar) -> Scalar:
        if isinstance(v, int | float) and not isinstance(v, bool) and not abs(v) <= MAX_EXACT:
            raise ValueError(f"expect must be a finite number within +/-(2**53 - 1), evidence cannot carry {v!r}")
        return v

    @model_validator(mode="after")
    def _has_expectation(self) -> SmokeQuery:
        if "expect" not in self.model_fields_set:
            raise ValueError("give `expect` (the value the query must return)")
        return self


class FreshnessConfig(_Frozen):
    column: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){1,2}$",
        description="table.column or schema.table.column",
    )
    method: Literal["column", "replay_timestamp"] = "column"

    @model_validator(mode="after")
    def _column_given(self) -> FreshnessConfig:
        if self.method == "column" and not self.column:
            raise ValueError("give `column: table.column` or `method: replay_timestamp`")
        return self


class ValidatorsConfig(_Frozen):
    schema_: Annotated[SchemaConfig | None, Field(alias="schema")] = None
    row_counts: dict[str, RowCountRule] = Field(default_factory=dict)
    smoke: tuple[SmokeQuery, ...] = ()
    freshness: FreshnessConfig | None = None
    parallelism: int = Field(
        default=4, ge=1, le=32, strict=True, description="Connections used to run checks in parallel."
    )
    baseline: Path | None = Field(
        default=None,
        description="Baseline JSON for row count rules; defaults to schema.baseline.",
        json_schema_extra={"x-must-exist": True},
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
