"""What a backend declares about itself: its source kinds and their models, its factory, its RPO reference.

A backend is found through a :class:`BackendDeclaration`. The registry
(:mod:`drills.backends`) reads the built-in ones and those published under the
``restore_drills.backends`` entry-point group, and builds from them the map of
source kinds, the runbook's ``source`` union and the published JSON Schema.

A declaration must be cheap to import: the runbook loader reads every one, and
``drill validate`` must not load boto3, psycopg or pymysql. So it names its
factory and backup check as ``"module:attribute"`` strings, imported only when
a drill runs (or a callable, for a backend light enough to be one module).

This module is also the vocabulary of source models: :class:`SourceModel` (the
base every source model derives from), :data:`TargetTime` and the
:data:`MustExist` marker.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from drills.backends.base import BackendFactory

__all__ = [
    "MUST_EXIST_KEY",
    "BackendDeclaration",
    "MustExist",
    "RpoReference",
    "SourceModel",
    "TargetTime",
    "aware_target_time",
    "recovery_target",
]

#: JSON Schema keyword (and field marker) for a path that must exist when the runbook is loaded.
MUST_EXIST_KEY = "x-must-exist"

MustExist: Any = Field(json_schema_extra={MUST_EXIST_KEY: True})
"""Mark a path field as ``Annotated[Path, MustExist]`` (or ``Annotated[Path | None, MustExist]``): the runbook
loader checks it exists (exit 2, ``FILE:LINE: field: path does not exist``) before anything starts, and the
published JSON Schema says so (``"x-must-exist": true``).

Use it for what the *environment* must provide (a key, a baseline, a config file the operator writes), not for
the backup itself: a backup that is missing because last night's backup never ran is a failed drill with
evidence (:class:`~drills.errors.BackupDefect`, exit 1), found by the backend's preflight and ``check_backup``.
The marker is a JSON Schema keyword rather than a class so that the :mod:`validators` package, which knows
nothing of :mod:`drills`, marks its baseline paths the same way."""

TargetTime = datetime | Literal["latest"]


def aware_target_time(v: TargetTime) -> TargetTime:
    """A ``field_validator`` for ``target_time``: a naive datetime is refused (whose midnight would it be?)."""
    if isinstance(v, datetime) and v.tzinfo is None:
        raise ValueError("target_time needs a timezone, e.g. 2026-11-26T12:00:00Z")
    return v


class SourceModel(BaseModel):
    """Base of every runbook ``source`` model: frozen, unknown keys refused, ``kind`` set by a subclass as
    ``kind: Literal["my-kind"]`` (the discriminator of the runbook's source union)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


RpoReference = Literal["backup-created", "recovery-target"]
"""Where the achieved RPO of a drill of this source is measured from:

``backup-created``
    the restored data is the backup as it was taken (a dump): the RPO is the time from the backup's
    creation (``created_at`` in the preflight's recovery point) to the restore request. Evidence method ``dump``.
``recovery-target``
    the data is replayed to a point: the newest commit the freshness validator finds, against the source's
    ``target_time`` when it is a time (method ``target``), else against the restore request (method
    ``request``); ``none`` without a freshness column."""


def recovery_target(source: SourceModel) -> RpoReference:
    """The default :attr:`BackendDeclaration.rpo_reference`: every kind is replayed to a point."""
    return "recovery-target"


def _import(path: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep or not attr:
        raise ValueError(f"{path!r} is not a 'module:attribute' path")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class BackendDeclaration:
    """One backend: what the registry, the runbook loader, the schema and the API need to know of it.

    ``name`` is stored with every resource the backend journals (``drill teardown`` after a crash rebuilds the
    backend by it), so it must never change once released. ``kinds`` maps each runbook ``source.kind`` to its
    model, a :class:`SourceModel` whose ``kind`` field is ``Literal[<that kind>]``; the models' fields are the
    backend's typed options. ``factory`` builds the backend (``create(source, settings) -> Backend``);
    ``check_backup(source) -> dict`` runs the backup checks that need no server (``drill validate``), raising
    :class:`~drills.errors.BackupDefect`; ``rpo_reference(source)`` says where the achieved RPO is measured from.
    """

    name: str
    kinds: Mapping[str, type[SourceModel]]
    factory: str | BackendFactory
    check_backup: str | Callable[[Any], dict[str, Any]] | None = None
    rpo_reference: Callable[[Any], RpoReference] = recovery_target

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError(f"backend {self.name!r} declares no source kind")
        for kind, model in self.kinds.items():
            declared = model.model_fields.get("kind")
            if not (isinstance(model, type) and issubclass(model, SourceModel)) or declared is None:
                raise ValueError(f"backend {self.name!r}: the model of kind {kind!r} is not a SourceModel")
            if typing.get_args(declared.annotation) != (kind,):
                raise ValueError(f"backend {self.name!r}: {model.__name__}.kind must be Literal[{kind!r}]")

    def create_factory(self) -> BackendFactory:
        """The backend's factory, importing its module now (the heavy imports happen here, not at load)."""
        made: BackendFactory = _import(self.factory) if isinstance(self.factory, str) else self.factory
        return made

    def backup_checker(self) -> Callable[[Any], dict[str, Any]] | None:
        """The offline backup check, imported on demand; None when the backend has none (AWS)."""
        if self.check_backup is None:
            return None
        checker: Callable[[Any], dict[str, Any]] = (
            _import(self.check_backup) if isinstance(self.check_backup, str) else self.check_backup
        )
        return checker
