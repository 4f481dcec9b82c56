"""The backend registry, built from declarations: built-ins plus the ``restore_drills.backends`` entry points.

Every backend declares itself with a :class:`~drills.backends.declare.BackendDeclaration`: its name, its
source kinds and their models, its factory. From those alone this module answers which backend drills a
``source.kind`` (:data:`SOURCE_BACKENDS`), builds a backend by name (:func:`backend_factory`, also after a
crash from the name journaled with a resource), runs the offline backup check (:func:`check_backup`), and
gives the runbook its ``source`` union (:class:`RegisteredSource`, hence the published JSON Schema).

A third-party package ships a backend by publishing its declaration as an entry point::

    [project.entry-points."restore_drills.backends"]
    cloudnativepg = "drills_cnpg.declaration:DECLARATION"

The declarations are read on first use (the CLI's ``--help`` reads none), so a declaration module must be
cheap to import: heavy imports (boto3, psycopg, pymysql, server helpers) belong to the module its
``factory`` names, imported when a drill runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from drills.errors import InputError

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

    from drills.backends.base import BackendFactory
    from drills.backends.declare import BackendDeclaration, SourceModel

__all__ = [
    "BUILTIN_DECLARATIONS",
    "ENTRY_POINT_GROUP",
    "SOURCE_BACKENDS",
    "RegisteredSource",
    "backend_factory",
    "check_backup",
    "declaration_for_kind",
    "declarations",
    "generation",
    "register",
    "unregister",
    "validate_source",
]

ENTRY_POINT_GROUP = "restore_drills.backends"

#: The backends of this package, as ``module:attribute`` of their declarations (light modules, see each).
BUILTIN_DECLARATIONS = (
    "drills.engines.postgres.declaration:DECLARATION",
    "drills.engines.mariadb.declaration:DECLARATION",
    "drills.aws.rds_declaration:DECLARATION",
    "drills.aws.aurora_declaration:DECLARATION",
    "drills.engines.postgres.pgbackrest_declaration:DECLARATION",
    "drills.engines.postgres.barman_declaration:DECLARATION",
)


class _Registry:
    """The declarations by backend name and by source kind, read once, on first use."""

    def __init__(self) -> None:
        self.by_name: dict[str, BackendDeclaration] = {}
        self.by_kind: dict[str, BackendDeclaration] = {}
        self.loaded = False
        self.generation = next(_GENERATIONS)


_GENERATIONS = itertools.count()  # process-wide, so no two states of any registry share a generation
_REG = _Registry()


def _load(path: str, origin: str) -> BackendDeclaration:
    from drills.backends.declare import BackendDeclaration

    module, _, attr = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except Exception as exc:  # a broken plugin must say which one it is, not crash every command
        raise InputError(
            f"backend {origin} ({path}) cannot be loaded: {type(exc).__name__}: {exc}",
            hint="fix or uninstall the package that declares it",
        ) from None
    if not isinstance(found, BackendDeclaration):
        raise InputError(f"backend {origin} ({path}) is not a BackendDeclaration", hint="fix the entry point")
    return found


def _add(decl: BackendDeclaration, origin: str) -> None:
    """Add one declaration; a second backend of the same name or kind is refused, never silently preferred."""
    if decl.name in _REG.by_name:
        raise InputError(f"backend {origin}: the name {decl.name!r} is taken", hint="two packages declare it")
    taken = sorted(k for k in decl.kinds if k in _REG.by_kind)
    if taken:
        owners = ", ".join(f"{k} (by {_REG.by_kind[k].name})" for k in taken)
        raise InputError(
            f"backend {origin} {decl.name!r}: source kind already declared: {owners}",
            hint="a kind belongs to one backend; rename the new one",
        )
    _REG.by_name[decl.name] = decl
    _REG.by_kind.update(dict.fromkeys(decl.kinds, decl))
    _REG.generation = next(_GENERATIONS)


def _ensure() -> None:
    """Read the declarations once; a plugin that fails leaves the registry unread, so every use fails loudly."""
    if _REG.loaded:
        return
    try:
        for path in BUILTIN_DECLARATIONS:
            _add(_load(path, "built-in"), "built-in")
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _add(_load(ep.value, f"entry point {ep.name!r}"), f"entry point {ep.name!r}")
    except BaseException:
        _REG.by_name.clear()
        _REG.by_kind.clear()
        raise
    _REG.loaded = True


def declarations() -> dict[str, BackendDeclaration]:
    """Every known backend by name, built-ins first."""
    _ensure()
    return dict(_REG.by_name)


def declaration_for_kind(kind: str) -> BackendDeclaration:
    _ensure()
    return _REG.by_kind[kind]


def generation() -> int:
    """Changes whenever the set of backends does: the runbook model rebuilds its source union then."""
    _ensure()
    return _REG.generation


def register(decl: BackendDeclaration) -> None:
    """Add a backend in this process (an embedding program, a test): as an entry point would, without one."""
    _ensure()
    _add(decl, "registered")


def unregister(name: str) -> None:
    """Remove a backend added with :func:`register` (tests restore the registry with it)."""
    _ensure()
    decl = _REG.by_name.pop(name)
    for kind in decl.kinds:
        _REG.by_kind.pop(kind, None)
    _REG.generation = next(_GENERATIONS)


class _SourceBackends(Mapping[str, str]):
    """``source.kind`` -> backend name, read from the declarations on each lookup."""

    def __getitem__(self, kind: str) -> str:
        return declaration_for_kind(kind).name

    def __iter__(self) -> Iterator[str]:
        _ensure()
        return iter(dict(_REG.by_kind))

    def __len__(self) -> int:
        _ensure()
        return len(_REG.by_kind)


SOURCE_BACKENDS: Mapping[str, str] = _SourceBackends()


def backend_factory(name: str) -> BackendFactory:
    """The ``create`` function of a backend, importing its module on demand."""
    _ensure()
    if name not in _REG.by_name:
        raise InputError(f"no backend named {name!r}", hint="known: " + ", ".join(sorted(_REG.by_name)))
    return _REG.by_name[name].create_factory()


def check_backup(source: Any) -> dict[str, Any]:
    """The backup checks that need no server, as ``drill validate`` runs them before the night of a drill.

    A backend may declare ``check_backup(source) -> dict`` (facts about what it found); it raises
    :class:`~drills.errors.BackupDefect` naming the defect. Backends without one (AWS: the snapshot
    lives in the account) have nothing to check offline.
    """
    checker = declaration_for_kind(source.kind).backup_checker()
    return checker(source) if checker is not None else {}


def source_models() -> dict[str, type[SourceModel]]:
    """Every source model by kind, in declaration order (the order of the runbook's union and its schema)."""
    _ensure()
    return {kind: model for decl in _REG.by_name.values() for kind, model in decl.kinds.items()}


class RegisteredSource:
    """Pydantic marker: ``Annotated[SourceModel, RegisteredSource]`` validates as the union of every declared
    source model, discriminated on ``kind``. Read when the model's schema is built (and rebuilt)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        choices: dict[Any, CoreSchema] = {kind: handler.generate_schema(m) for kind, m in source_models().items()}
        return core_schema.tagged_union_schema(choices, discriminator="kind")


def validate_source(data: Any) -> SourceModel:
    """A source as the journal stored it (``drill teardown`` after a crash), validated by its declared model."""
    from typing import Annotated

    from pydantic import TypeAdapter

    from drills.backends.declare import SourceModel

    kind = data.get("kind") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind not in SOURCE_BACKENDS:  # not damage: the backend is not installed here
        raise InputError(
            f"no backend here drills source kind {kind!r}",
            hint=f"install the package that declares it (entry point group {ENTRY_POINT_GROUP})",
        )
    source: SourceModel = TypeAdapter(Annotated[SourceModel, RegisteredSource]).validate_python(data)
    return source
