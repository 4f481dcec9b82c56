"""The registry is built from backend declarations, and a backend added in one module is a first-class kind.

``latest_dump_backend`` (tests/latest_dump_backend.py) is registered here as an embedding program would
(:func:`drills.backends.register`); the same module as a real entry point, and its drill through the
machine against PostgreSQL, are in tests/functional/test_backend_plugin.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import latest_dump_backend
import pytest

from drills import backends
from drills.backends.declare import BackendDeclaration, SourceModel
from drills.cli import main
from drills.errors import InputError, RunbookError
from drills.runbook import json_schema, load_runbook, parse_runbook

RUNBOOK = textwrap.dedent(
    """\
    name: nightly-dump
    source:
      kind: latest-dump
      directory: dumps
    objectives: {rto_seconds: 300}
    """
)


@pytest.fixture
def latest_dump() -> Iterator[BackendDeclaration]:
    backends.register(latest_dump_backend.DECLARATION)
    yield latest_dump_backend.DECLARATION
    backends.unregister("latest-dump")


def _schema_sources() -> dict[str, Any]:
    schema = json.loads(json_schema())
    mapping = schema["properties"]["source"]["discriminator"]["mapping"]
    return {kind: schema["$defs"][ref.rsplit("/", 1)[1]] for kind, ref in mapping.items()}


def test_the_built_in_kinds_and_their_backends() -> None:
    assert dict(backends.SOURCE_BACKENDS) == {
        "postgres-pitr": "local-postgres",
        "postgres-dump": "local-postgres",
        "mariadb-pitr": "local-mariadb",
        "mariadb-dump": "local-mariadb",
        "rds-snapshot": "rds",
        "rds-pitr": "rds",
        "aurora-snapshot": "aurora",
        "aurora-pitr": "aurora",
        "pgbackrest": "pgbackrest",
        "barman": "barman",
    }
    assert set(_schema_sources()) == set(backends.SOURCE_BACKENDS)


def test_a_backend_from_one_module_loads_with_its_paths_resolved(tmp_path: Path, latest_dump: Any) -> None:
    (tmp_path / "dumps").mkdir()
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    src = load_runbook(tmp_path / "rb.yaml").runbook.source
    assert isinstance(src, latest_dump_backend.LatestDumpSource)
    assert src.directory == tmp_path / "dumps"
    assert backends.SOURCE_BACKENDS["latest-dump"] == "latest-dump"


def test_its_must_exist_path_is_a_runbook_error_with_file_line_and_field(
    tmp_path: Path, latest_dump: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rb.yaml").write_text(RUNBOOK)  # no dumps/ folder
    with pytest.raises(RunbookError) as err:
        load_runbook(tmp_path / "rb.yaml")
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"{tmp_path / 'rb.yaml'}:4: source.directory: path does not exist: ")
    assert main(["validate", str(tmp_path / "rb.yaml")]) == 2
    assert "source.directory: path does not exist" in capsys.readouterr().err
    assert load_runbook(tmp_path / "rb.yaml", check_paths=False).runbook.source.kind == "latest-dump"


def test_drill_run_with_its_must_exist_path_missing_starts_nothing(tmp_path: Path, latest_dump: Any) -> None:
    (tmp_path / "rb.yaml").write_text(RUNBOOK)  # no dumps/ folder
    home = tmp_path / "home"
    os.environ["RESTORE_DRILLS_HOME"] = str(home)
    try:
        assert main(["run", str(tmp_path / "rb.yaml")]) == 2
    finally:
        del os.environ["RESTORE_DRILLS_HOME"]
    assert not home.exists()  # no journal, no key: nothing was started


def test_an_empty_folder_is_a_backup_defect_found_by_its_declared_check(
    tmp_path: Path, latest_dump: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "notes.txt").write_text("not an archive")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    assert main(["validate", str(tmp_path / "rb.yaml")]) == 1  # the backup is missing, the runbook is fine
    assert "no archive matching *.pgc" in capsys.readouterr().err


def test_it_is_in_the_schema_while_registered_and_gone_after(latest_dump: Any) -> None:
    prop = _schema_sources()["latest-dump"]["properties"]
    assert prop["directory"]["x-must-exist"] is True
    assert "x-must-exist" not in prop["pattern"]
    backends.unregister("latest-dump")
    try:
        assert "latest-dump" not in _schema_sources()
        with pytest.raises(RunbookError) as err:
            parse_runbook(RUNBOOK)
        assert "latest-dump" not in (err.value.hint or "") and "postgres-dump" in (err.value.hint or "")
    finally:
        backends.register(latest_dump_backend.DECLARATION)  # the fixture unregisters it


def test_an_unknown_kind_is_refused_naming_the_registered_ones(latest_dump: Any) -> None:
    with pytest.raises(RunbookError) as err:
        parse_runbook(RUNBOOK.replace("latest-dump", "latest-dumb"))
    assert err.value.line == 2 and err.value.field == "source"
    assert "latest-dump" in (err.value.hint or "")


def test_a_kind_already_declared_is_refused_and_the_registry_left_as_it_was() -> None:
    class Impostor(SourceModel):
        kind: Literal["postgres-dump"]

    before = dict(backends.SOURCE_BACKENDS)
    with pytest.raises(InputError, match=r"postgres-dump \(by local-postgres\)"):
        backends.register(BackendDeclaration(name="impostor", kinds={"postgres-dump": Impostor}, factory="x:y"))
    with pytest.raises(InputError, match="the name 'local-postgres' is taken"):
        backends.register(BackendDeclaration(name="local-postgres", kinds={"other": _model("other")}, factory="x:y"))
    assert dict(backends.SOURCE_BACKENDS) == before


def _model(kind: str) -> type[SourceModel]:
    class Other(SourceModel):
        kind: Literal["other"]

    return Other


def test_a_declaration_whose_model_does_not_carry_its_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"kind must be Literal\['elsewhere'\]"):
        BackendDeclaration(name="x", kinds={"elsewhere": _model("other")}, factory="x:y")
    with pytest.raises(ValueError, match="declares no source kind"):
        BackendDeclaration(name="x", kinds={}, factory="x:y")


def test_the_backend_says_where_its_rpo_reference_comes_from() -> None:
    dump = parse_runbook(RUNBOOK.replace("kind: latest-dump\n  directory: dumps", "kind: postgres-dump\n  archive: a"))
    pitr = parse_runbook(
        RUNBOOK.replace(
            "kind: latest-dump\n  directory: dumps",
            "kind: mariadb-pitr\n  backup: b\n  binlogs: l\n  target_time: latest",
        )
    )
    assert backends.declaration_for_kind("postgres-dump").rpo_reference(dump.source) == "backup-created"
    assert backends.declaration_for_kind("mariadb-pitr").rpo_reference(pitr.source) == "recovery-target"
    assert latest_dump_backend.DECLARATION.rpo_reference(dump.source) == "backup-created"


def test_declarations_import_nothing_heavy() -> None:
    """The runbook loader reads every declaration: none may pull in boto3, psycopg, pymysql or a backend."""
    import subprocess
    import sys

    code = (
        "import sys; from drills import backends; from drills.runbook import json_schema; "
        "backends.declarations(); json_schema(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'psycopg', 'pymysql') "
        "or m in ('drills.engines.postgres.backend', 'drills.engines.mariadb.backend', 'drills.aws.rds', "
        "'drills.aws.aurora', 'drills.engines.postgres.pgbackrest', 'drills.engines.postgres.barman')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_plugin_that_cannot_be_imported_is_named_and_fails_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = importlib.metadata.EntryPoint("cnpg", "no_such_package_here:DECLARATION", backends.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kw: Any) -> Any:
        return [broken] if kw.get("group") == backends.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(backends, "_REG", backends._Registry())  # read the declarations afresh
    (tmp_path / "rb.yaml").write_text(
        RUNBOOK.replace("kind: latest-dump\n  directory: dumps", "kind: postgres-dump\n  archive: a")
    )
    for _ in range(2):  # not half-registered after the first failure
        assert main(["validate", "--no-check-paths", str(tmp_path / "rb.yaml")]) == 2
        err = capsys.readouterr().err
        assert "backend entry point 'cnpg' (no_such_package_here:DECLARATION) cannot be loaded" in err
        assert "ModuleNotFoundError" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InputError):
        dict(backends.SOURCE_BACKENDS)


def test_a_journaled_source_whose_backend_is_not_installed_says_so() -> None:
    """``drill teardown`` after a crash reads the source back: an uninstalled plugin is not a damaged journal."""
    with pytest.raises(InputError, match="no backend here drills source kind 'latest-dump'") as err:
        backends.validate_source({"kind": "latest-dump", "directory": "/x"})
    assert backends.ENTRY_POINT_GROUP in (err.value.hint or "")
    assert isinstance(backends.validate_source({"kind": "postgres-dump", "archive": "/x.pgc"}), SourceModel)
