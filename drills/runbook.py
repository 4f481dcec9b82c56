"""Runbook models and YAML loading with ``FILE:LINE: field.path: problem`` errors.

A runbook is loaded in three steps, each pure but the first: read the file and
compose the YAML with node positions; validate against the pydantic models;
resolve relative paths against the runbook's folder and check they exist.
Every problem becomes a :class:`~drills.errors.RunbookError` pointing at the
line of the offending key, so an editor or a CI log leads straight to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from drills.backends import SOURCE_BACKENDS
from drills.errors import RunbookError
from drills.sources import Source
from validators.config import ValidatorsConfig

__all__ = [
    "ConnectOverride",
    "EvidenceConfig",
    "LoadedRunbook",
    "Objectives",
    "Runbook",
    "StateName",
    "StatePolicy",
    "json_schema",
    "load_runbook",
    "parse_runbook",
]

StateName = Literal["preflight", "restore", "await_ready", "connect", "validate", "measure", "teardown"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objectives(_Frozen):
    rto_seconds: int = Field(gt=0, description="Recovery time objective: restore request to validated.")
    rpo_seconds: int | None = Field(default=None, ge=0, description="Recovery point objective.")


class EvidenceConfig(_Frozen):
    dir: Path = Field(default=Path("evidence"), description="Where evidence envelopes are written.")
    signing_key: Path | None = Field(default=None, description="Ed25519 private key (PEM) from `drill keygen`.")
    kms_key_id: str | None = Field(
        default=None,
        pattern=r"^(arn:aws[\w-]*:kms:[\w-]+:\d{12}:key/)?[0-9a-f-]{36}$|^mrk-[0-9a-f]{32}$",
        description="Sign with this AWS KMS key (ECC_NIST_P256, SIGN_VERIFY): key id or ARN, never an alias.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> EvidenceConfig:
        if self.signing_key is not None and self.kms_key_id is not None:
            raise ValueError("give signing_key or kms_key_id, not both")
        return self


class ConnectOverride(_Frozen):
    """Route the data-plane connection elsewhere (an SSM port-forwarding tunnel)."""

    host: str
    port: int = Field(gt=0, lt=65536)


class StatePolicy(_Frozen):
    attempts: int = Field(default=1, ge=1, le=50)
    timeout_seconds: float | None = Field(default=None, gt=0)
    backoff_initial_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)


class Runbook(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Lowercase letters, digits, dashes.")
    description: str = ""
    source: Source
    objectives: Objectives
    validators: ValidatorsConfig = Field(default_factory=ValidatorsConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    connect: ConnectOverride | None = None
    deadline_seconds: int | None = Field(
        default=None, gt=0, description="Whole-drill deadline; default 3x the RTO objective."
    )
    states: dict[StateName, StatePolicy] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    scratch_dir: Path | None = Field(
        default=None,
        description="Where local restores are laid out (data directories, staged WAL); "
        "`drill run --scratch` overrides it; without either, RESTORE_DRILLS_SCRATCH, else the system temp directory.",
    )

    @property
    def effective_deadline_seconds(self) -> int:
        return self.deadline_seconds or 3 * self.objectives.rto_seconds


@dataclass(frozen=True)
class LoadedRunbook:
    runbook: Runbook
    path: Path
    sha256: str


# ---------------------------------------------------------------- YAML with positions


def _line_index(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    """Record the 1-based line of every key and item, keyed by its path."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _line_index(item, (*path, i), out)


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of the deepest known prefix of a pydantic error location."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_DISCRIMINATED_TAGS = set(SOURCE_BACKENDS)  # every source.kind the runbook accepts


# union members pydantic names in an error location (e.g. target_time: datetime | "latest")
_TYPE_SEGMENTS = {"datetime", "str", "int", "float", "bool", "dict", "list"}


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-tag and type segments so the path matches the YAML."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            part in _DISCRIMINATED_TAGS or part in _TYPE_SEGMENTS or "[" in part or part.startswith("function-")
        ):
            continue
        out.append("schema" if part == "schema_" else part)
    return tuple(out)


def _hint(err_type: str, loc: tuple[str | int, ...]) -> str | None:
    if err_type == "extra_forbidden":
        return "remove it, or check its spelling against `drill schema`"
    if err_type == "missing":
        return "add it; `drill schema` lists every field"
    if err_type == "union_tag_invalid":
        return "kind must be one of: " + ", ".join(sorted(_DISCRIMINATED_TAGS))
    if "datetime" in err_type or (loc and loc[-1] == "target_time"):
        return "use ISO-8601 with a timezone, e.g. 2026-11-26T12:00:00Z, or `latest`"
    return None


def _format_error(err: Any) -> tuple[tuple[str | int, ...], str]:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
        shown = err["input"]
        if not isinstance(shown, dict | list):
            msg = f"{msg} (got {shown!r})"
    return _clean_loc(tuple(err["loc"])), msg


def parse_runbook(text: str, file: str = "<runbook>") -> Runbook:
    """Validate runbook text; raise RunbookError for the first problem, with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise RunbookError(file, line, "", f"not valid YAML: {exc.problem}", hint="fix the YAML syntax") from None
    if node is None or not isinstance(data, dict):
        raise RunbookError(file, 1, "", "a runbook is a YAML mapping (name, source, objectives, ...)")
    lines: dict[tuple[str | int, ...], int] = {}
    _line_index(node, (), lines)
    try:
        return Runbook.model_validate(data)
    except PydanticValidationError as exc:
        # a misspelt key explains the "missing" error that comes with it: report it first
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc, msg = _format_error(first)
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        field = ".".join(str(p) for p in loc)
        raise RunbookError(file, _line_for(loc, lines), field, msg, hint=_hint(first["type"], loc)) from None


# ---------------------------------------------------------------- paths

# Paths that must exist before anything starts, per model field; evidence.dir is created.
# The backup's own paths (source.*) are not here on purpose: a backup that is missing because
# last night's backup never ran is a failed drill with evidence (BackupDefect, exit 1), found by
# the backend's preflight and by `drill validate`, never a runbook typo (exit 2).
_MUST_EXIST = {
    ("validators", "schema", "baseline"),
    ("validators", "baseline"),
    ("evidence", "signing_key"),
}


def _resolve_paths(
    model: BaseModel, base: Path, prefix: tuple[str, ...], problems: list[tuple[tuple[str, ...], str]]
) -> BaseModel:
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = (*prefix, "schema" if name == "schema_" else name)
        if isinstance(value, Path):
            resolved = value if value.is_absolute() else (base / value)
            updates[name] = resolved
            if key in _MUST_EXIST and not resolved.exists():
                problems.append((key, f"path does not exist: {resolved}"))
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base, key, problems)
    return model.model_copy(update=updates)


def load_runbook(path: str | Path, *, check_paths: bool = True) -> LoadedRunbook:
    """Load, validate and resolve a runbook file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RunbookError(str(p), None, "", f"cannot read the runbook: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunbookError(str(p), None, "", f"not UTF-8 text ({exc.reason})") from None
    runbook = parse_runbook(text, str(p))
    problems: list[tuple[tuple[str, ...], str]] = []
    resolved = _resolve_paths(runbook, p.resolve().parent, (), problems)
    assert isinstance(resolved, Runbook)
    if check_paths and problems:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[tuple[str | int, ...], int] = {}
        if node is not None:
            _line_index(node, (), lines)
        key, msg = problems[0]
        raise RunbookError(
            str(p),
            _line_for(key, lines),
            ".".join(key),
            msg,
            hint="fix the path (relative paths start at the runbook's folder)",
        )
    return LoadedRunbook(runbook=resolved, path=p.resolve(), sha256=hashlib.sha256(raw).hexdigest())


def json_schema() -> str:
    """The runbook JSON Schema, for editors (yaml-language-server) and reviews."""
    schema = Runbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "restore-drills runbook"
    return json.dumps(schema, indent=2, sort_keys=True)
