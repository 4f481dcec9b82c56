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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from drills import backends
from drills.backends import RegisteredSource
from drills.backends.declare import MUST_EXIST_KEY, MustExist, SourceModel
from drills.errors import RunbookError
from drills.yamlsafe import MAX_BYTES, YamlProblem, load_bounded
from validators.config import ValidatorsConfig

__all__ = [
    "MAX_DEADLINE_SECONDS",
    "MAX_RPO_SECONDS",
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


#: Longest whole-drill deadline (24 days). Every query of a drill runs with the time left as its
#: server-side statement timeout, and PostgreSQL's ``statement_timeout`` stops at 2**31-1 ms (~24.8 days)
#: (MariaDB's ``max_statement_time`` at one year, MySQL's ``max_execution_time`` at 2**32-1 ms).
MAX_DEADLINE_SECONDS = 24 * 86400
#: Largest RPO objective (ten years): evidence carries it as integer milliseconds, exact below 2**53.
MAX_RPO_SECONDS = 3660 * 86400
#: Longest retry backoff: a wait between attempts longer than an hour is a stuck drill.
MAX_BACKOFF_SECONDS = 3600.0


class Objectives(_Frozen):
    rto_seconds: int = Field(
        gt=0,
        le=MAX_DEADLINE_SECONDS,
        strict=True,
        description="Recovery time objective: restore request to validated (at most 24 days).",
    )
    rpo_seconds: int | None = Field(
        default=None, ge=0, le=MAX_RPO_SECONDS, strict=True, description="Recovery point objective."
    )


class S3Evidence(_Frozen):
    """A copy of every envelope on S3 under Object Lock (COMPLIANCE) and SSE-KMS (docs/evidence.md)."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="An Object Lock enabled bucket.")
    prefix: str = Field(
        default="", pattern=r"^([A-Za-z0-9!_.*'()/-]{0,512}/)?$", description="Key prefix, empty or ending in /."
    )
    retention_days: int = Field(ge=1, le=36500, strict=True, description="COMPLIANCE retention of each record.")
    kms_key_id: str | None = Field(default=None, description="KMS key for SSE-KMS (default: the bucket's).")


class EvidenceConfig(_Frozen):
    dir: Path = Field(default=Path("evidence"), description="Where evidence envelopes are written.")
    signing_key: Annotated[Path | None, MustExist] = Field(
        default=None, description="Ed25519 private key (PEM) from `drill keygen`."
    )
    kms_key_id: str | None = Field(
        default=None,
        pattern=r"^(arn:aws[\w-]*:kms:[\w-]+:\d{12}:key/)?[0-9a-f-]{36}$|^mrk-[0-9a-f]{32}$",
        description="Sign with this AWS KMS key (ECC_NIST_P256, SIGN_VERIFY): key id or ARN, never an alias.",
    )
    s3: S3Evidence | None = None
    trusted_keys: Annotated[Path | None, MustExist] = Field(
        default=None,
        description="PEM public key or keyring JSON whose records count as history, besides the signing key's.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> EvidenceConfig:
        if self.signing_key is not None and self.kms_key_id is not None:
            raise ValueError("give signing_key or kms_key_id, not both")
        return self


_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Longest drill cadence a schedule may require (a year): beyond that no control framework counts it.
MAX_SCHEDULE_SECONDS = 366 * 86400


class Schedule(_Frozen):
    """How often the runbook must be drilled: what `drill pack` and `drill doctor` hold the history to."""

    every: str = Field(
        pattern=r"^[1-9][0-9]{0,5}[mhdw]$",
        description="Required cadence: a number and a unit, m(inutes), h(ours), d(ays) or w(eeks): `30d`, `12h`.",
    )

    @property
    def every_seconds(self) -> int:
        return int(self.every[:-1]) * _DURATION_UNITS[self.every[-1]]

    @model_validator(mode="after")
    def _bounded(self) -> Schedule:
        if self.every_seconds > MAX_SCHEDULE_SECONDS:
            raise ValueError(f"every {self.every} is longer than a year; drill at least yearly (e.g. 365d)")
        return self


class ConnectOverride(_Frozen):
    """Route the data-plane connection elsewhere (an SSM port-forwarding tunnel)."""

    host: str
    port: int = Field(gt=0, lt=65536, strict=True)


class StatePolicy(_Frozen):
    attempts: int = Field(default=1, ge=1, le=50, strict=True)
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_SECONDS, strict=True, allow_inf_nan=False)
    backoff_initial_seconds: float = Field(default=1.0, ge=0, le=MAX_BACKOFF_SECONDS, strict=True, allow_inf_nan=False)
    backoff_max_seconds: float = Field(default=30.0, ge=0, le=MAX_BACKOFF_SECONDS, strict=True, allow_inf_nan=False)


class Runbook(_Frozen):
    # the source union is built from the backend registry when the schema is first needed (not at import:
    # `drill --help` reads no declaration), and rebuilt when a backend is registered (see _model)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Lowercase letters, digits, dashes.")
    description: str = ""
    source: Annotated[SourceModel, RegisteredSource]
    objectives: Objectives
    validators: ValidatorsConfig = Field(default_factory=ValidatorsConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    connect: ConnectOverride | None = None
    deadline_seconds: int | None = Field(
        default=None,
        gt=0,
        le=MAX_DEADLINE_SECONDS,
        strict=True,
        description="Whole-drill deadline; default 3x the RTO objective, at most 24 days.",
    )
    states: dict[StateName, StatePolicy] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    schedule: Schedule | None = None
    scratch_dir: Path | None = Field(
        default=None,
        description="Where local restores are laid out (data directories, staged WAL); "
        "`drill run --scratch` overrides it; without either, RESTORE_DRILLS_SCRATCH, else the system temp directory.",
    )

    @property
    def effective_deadline_seconds(self) -> int:
        """The deadline given, else 3x the RTO objective, never past :data:`MAX_DEADLINE_SECONDS`."""
        return self.deadline_seconds or min(3 * self.objectives.rto_seconds, MAX_DEADLINE_SECONDS)


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


_BUILT_FOR = [-1]  # the registry generation the Runbook model's source union was built from


def _model() -> type[Runbook]:
    """The Runbook model, its source union rebuilt if backends were registered since it was built."""
    now = backends.generation()
    if now != _BUILT_FOR[0]:
        Runbook.model_rebuild(force=True)
        _BUILT_FOR[0] = now
    return Runbook


def _kinds() -> set[str]:
    """Every source.kind the runbook accepts (pydantic names the tag in an error location)."""
    return set(backends.SOURCE_BACKENDS)


# union members pydantic names in an error location (e.g. target_time: datetime | "latest")
_TYPE_SEGMENTS = {"datetime", "str", "int", "float", "bool", "dict", "list"}


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-tag and type segments so the path matches the YAML."""
    out: list[str | int] = []
    kinds = _kinds()
    for part in loc:
        if isinstance(part, str) and (
            part in kinds or part in _TYPE_SEGMENTS or "[" in part or part.startswith("function-")
        ):
            continue
        out.append("schema" if part == "schema_" else part)
    return tuple(out)


_DEADLINE_FIELDS = {"rto_seconds", "deadline_seconds", "timeout_seconds"}


_HINTS = {
    "extra_forbidden": "remove it, or check its spelling against `drill schema`",
    "missing": "add it; `drill schema` lists every field",
}


def _hint(err_type: str, loc: tuple[str | int, ...], given: object = None) -> str | None:
    if err_type in _HINTS:
        return _HINTS[err_type]
    if err_type == "union_tag_invalid":
        return "kind must be one of: " + ", ".join(sorted(_kinds()))
    if isinstance(given, bool) and err_type in ("int_type", "float_type"):
        return "write a number, not true/false"
    if err_type == "less_than_equal" and loc and loc[-1] in _DEADLINE_FIELDS:
        return (
            f"a drill runs at most {MAX_DEADLINE_SECONDS} s (24 days): its queries run with the time left as "
            "their server-side statement timeout, and PostgreSQL's stops at 2**31-1 ms"
        )
    if "datetime" in err_type or (loc and loc[-1] == "target_time"):
        return "use ISO-8601 with a timezone, e.g. 2026-11-26T12:00:00Z, or `latest`"
    return None


def _shown(value: object, limit: int = 80) -> str:
    """``repr`` cut to one short line: a hostile value must not flood the terminal or the CI log."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _field(loc: tuple[str | int, ...]) -> str:
    """``a.b.0.c``; a key with odd characters is shown quoted so the message stays on one line."""
    return ".".join(str(p) if str(p).isprintable() and "." not in str(p) else _shown(str(p), 40) for p in loc)


def _format_error(err: Any) -> tuple[tuple[str | int, ...], str]:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
        shown = err["input"]
        if not isinstance(shown, dict | list):
            msg = f"{msg} (got {_shown(shown)})"
    return _clean_loc(tuple(err["loc"])), msg


Lines = dict[tuple[str | int, ...], int]


def _parse(text: str, file: str) -> tuple[Runbook, Lines]:
    """The validated runbook and the line of every key, from one bounded YAML load."""
    try:
        node, data = load_bounded(text)
    except YamlProblem as exc:
        raise RunbookError(file, exc.line, "", exc.problem, hint=exc.hint) from None
    if node is None or not isinstance(data, dict):
        raise RunbookError(file, 1, "", "a runbook is a YAML mapping (name, source, objectives, ...)")
    lines: Lines = {}
    _line_index(node, (), lines)
    try:
        return _model().model_validate(data), lines
    except PydanticValidationError as exc:
        # a misspelt key explains the "missing" error that comes with it: report it first
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc, msg = _format_error(first)
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        hint = _hint(first["type"], loc, first.get("input"))
        raise RunbookError(file, _line_for(loc, lines), _field(loc), msg, hint=hint) from None


def parse_runbook(text: str, file: str = "<runbook>") -> Runbook:
    """Validate runbook text; raise RunbookError for the first problem, with its line."""
    return _parse(text, file)[0]


# ---------------------------------------------------------------- paths

# Paths that must exist before anything starts are the fields marked MustExist (drills.backends.declare),
# in any model of the runbook: evidence keys, validator baselines, a backend's config file. evidence.dir is
# created. The backup's own paths are not marked on purpose: a backup that is missing because last night's
# backup never ran is a failed drill with evidence (BackupDefect, exit 1), found by the backend's preflight
# and by `drill validate`, never a runbook typo (exit 2).


def _must_exist(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get(MUST_EXIST_KEY) is True


def _exists(path: Path) -> bool | str:
    """True/False, or why it cannot be told (a name too long, a loop of links): never an exception."""
    try:
        return path.exists()
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc)


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
            if _must_exist(type(model), name):
                found = _exists(resolved)
                if found is False:
                    problems.append((key, f"path does not exist: {_shown(str(resolved), 200)}"))
                elif found is not True:
                    problems.append((key, f"cannot check the path {_shown(str(resolved), 200)}: {found}"))
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base, key, problems)
    return model.model_copy(update=updates)


def _read_capped(p: Path) -> bytes:
    """The file's bytes, refusing anything over :data:`MAX_BYTES` without reading it all."""
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RunbookError(str(p), None, "", f"cannot read the runbook: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise RunbookError(
            str(p),
            None,
            "",
            f"the file is larger than {MAX_BYTES // 1024} KiB",
            hint="a runbook is a few KiB of settings; is this the right file?",
        )
    return raw


def load_runbook(path: str | Path, *, check_paths: bool = True) -> LoadedRunbook:
    """Load, validate and resolve a runbook file (at most 1 MiB, see :mod:`drills.yamlsafe`)."""
    p = Path(path)
    raw = _read_capped(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RunbookError(str(p), line, "", f"not UTF-8 text ({exc.reason})", hint="save the file as UTF-8") from None
    runbook, lines = _parse(text, str(p))
    problems: list[tuple[tuple[str, ...], str]] = []
    resolved = _resolve_paths(runbook, p.resolve().parent, (), problems)
    assert isinstance(resolved, Runbook)
    if check_paths and problems:
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
    schema = _model().model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "restore-drills runbook"
    return json.dumps(schema, indent=2, sort_keys=True)
