"""Malformed runbooks: each names the file, the line, the field and what is wrong; nothing starts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from drills.cli import main
from drills.engines.postgres.declaration import PostgresPitrSource
from drills.errors import RunbookError
from drills.runbook import json_schema, load_runbook

GOOD = textwrap.dedent(
    """\
    name: orders-pitr
    source:
      kind: postgres-pitr
      base_backup: backups/base
      wal_archive: backups/wal
      target_time: 2026-11-26T12:00:00Z
    objectives: {rto_seconds: 300, rpo_seconds: 60}
    validators:
      schema: {baseline: baselines/orders.json}
      row_counts: {orders: {min: 1000}, customers: {equals_baseline: true}}
      smoke:
        - {name: nothing after target, sql: "select 0", expect: 0}
      freshness: {column: orders.created_at}
    evidence: {dir: evidence, signing_key: keys/drill.key}
    """
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for d in ("backups/base", "backups/wal", "baselines", "keys"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "baselines/orders.json").write_text("{}")
    (tmp_path / "keys/drill.key").write_text("x")
    return tmp_path


def test_good_runbook_loads_with_paths_resolved_against_its_folder(folder: Path) -> None:
    (folder / "rb.yaml").write_text(GOOD)
    loaded = load_runbook(folder / "rb.yaml")
    src = loaded.runbook.source
    assert isinstance(src, PostgresPitrSource) and src.kind == "postgres-pitr"
    assert src.base_backup == folder / "backups/base"
    assert loaded.runbook.evidence.dir == folder / "evidence"
    assert len(loaded.sha256) == 64


# (replace this, with that, expected line, expected field path, words in the message)
CORPUS = [
    ("rto_seconds: 300", "rto_seconds: soon", 7, "objectives.rto_seconds", "valid integer"),
    ("rto_seconds: 300", "rto_seconds: -5", 7, "objectives.rto_seconds", "greater than 0"),
    ("  wal_archive: backups/wal\n", "  wal_archiv: backups/wal\n", 5, "source.wal_archiv", "Extra inputs"),
    ("  wal_archive: backups/wal\n", "", 2, "source.wal_archive", "Field required"),
    ("target_time: 2026-11-26T12:00:00Z", "target_time: 2026-11-26T12:00:00", 6, "source.target_time", "timezone"),
    ("target_time: 2026-11-26T12:00:00Z", "target_time: yesterday", 6, "source.target_time", "datetime"),
    ("kind: postgres-pitr", "kind: oracle-rman", 2, "source", "does not match"),
    ("{min: 1000}", "{min: 10, max: 5}", 10, "validators.row_counts.orders", "greater than max"),
    ("{min: 1000}", "{}", 10, "validators.row_counts.orders", "at least one of"),
    ("expect: 0}", "expct: 0}", 12, "validators.smoke.0.expct", "Extra inputs"),
    ("name: orders-pitr", "name: Orders PITR!", 1, "name", "pattern"),
    ("{column: orders.created_at}", "{column: 'orders; drop table x'}", 13, "validators.freshness.column", "pattern"),
    ("evidence: {dir: evidence", "evidense: {dir: evidence", 14, "evidense", "Extra inputs"),
    ("signing_key: keys/drill.key", "signing_key: keys/missing.key", 14, "evidence.signing_key", "does not exist"),
    (
        "baseline: baselines/orders.json",
        "baseline: baselines/x.json",
        9,
        "validators.schema.baseline",
        "does not exist",
    ),
    ("objectives: {rto_seconds: 300, rpo_seconds: 60}", "objectives: [300]", 7, "objectives", "valid dictionary"),
]


@pytest.mark.parametrize(("this", "that", "line", "field", "words"), CORPUS, ids=[c[1].strip()[:30] for c in CORPUS])
def test_malformed_runbook_names_file_line_and_field(
    folder: Path, this: str, that: str, line: int, field: str, words: str
) -> None:
    assert this in GOOD
    path = folder / "bad.yaml"
    path.write_text(GOOD.replace(this, that, 1))
    with pytest.raises(RunbookError) as info:
        load_runbook(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), line, field)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: {field}: ")


def test_yaml_syntax_error_points_at_the_line(folder: Path) -> None:
    path = folder / "broken.yaml"
    path.write_text(GOOD.replace("objectives: {rto_seconds: 300, rpo_seconds: 60}", "objectives: {rto_seconds: 300"))
    with pytest.raises(RunbookError) as info:
        load_runbook(path)
    assert info.value.line is not None and info.value.line >= 7
    assert "not valid YAML" in str(info.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_runbook_must_be_a_mapping(folder: Path, text: str) -> None:
    path = folder / "odd.yaml"
    path.write_text(text)
    with pytest.raises(RunbookError, match="YAML mapping"):
        load_runbook(path)


def test_cli_validate_exits_2_with_file_line_on_stderr(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "bad.yaml"
    path.write_text(GOOD.replace("rto_seconds: 300", "rto_seconds: soon"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"RunbookError: {path}:7: objectives.rto_seconds:" in err


def test_cli_validate_accepts_a_good_runbook_and_then_checks_its_backup(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "rb.yaml").write_text(GOOD)
    assert main(["validate", "--no-check-paths", str(folder / "rb.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    # backups/base is an empty directory here: the night's drill would fail, so validate does (exit 1)
    assert main(["validate", str(folder / "rb.yaml")]) == 1
    assert "BackupDefect" in capsys.readouterr().err


def test_cli_run_with_a_bad_runbook_starts_nothing(folder: Path, tmp_path: Path) -> None:
    path = folder / "bad.yaml"
    path.write_text(GOOD.replace("kind: postgres-pitr", "kind: nope"))
    home = tmp_path / "home"
    import os

    os.environ["RESTORE_DRILLS_HOME"] = str(home)
    try:
        assert main(["run", str(path)]) == 2
    finally:
        del os.environ["RESTORE_DRILLS_HOME"]
    assert not home.exists()  # no journal: nothing was started


KINDS = {
    "postgres-pitr", "postgres-dump", "mariadb-pitr", "mariadb-dump", "rds-snapshot", "rds-pitr",
    "aurora-snapshot", "aurora-pitr", "pgbackrest", "barman",
}  # fmt: skip


def test_json_schema_describes_every_source_kind() -> None:
    schema = json.loads(json_schema())
    mapping = schema["properties"]["source"]["discriminator"]["mapping"]
    assert set(mapping) == KINDS
    assert {ref["$ref"] for ref in schema["properties"]["source"]["oneOf"]} == set(mapping.values())


def test_json_schema_marks_the_paths_that_must_exist_and_not_the_backups() -> None:
    defs = json.loads(json_schema())["$defs"]
    assert defs["EvidenceConfig"]["properties"]["signing_key"]["x-must-exist"] is True
    assert defs["EvidenceConfig"]["properties"]["trusted_keys"]["x-must-exist"] is True
    assert defs["SchemaConfig"]["properties"]["baseline"]["x-must-exist"] is True
    assert defs["ValidatorsConfig"]["properties"]["baseline"]["x-must-exist"] is True
    assert "x-must-exist" not in defs["EvidenceConfig"]["properties"]["dir"]  # created, not required
    for model, field in (("PostgresPitrSource", "base_backup"), ("PostgresDumpSource", "archive"),
                         ("MariadbDumpSource", "dump"), ("BarmanSource", "config")):  # fmt: skip
        assert "x-must-exist" not in defs[model]["properties"][field]  # a missing backup is exit 1, not a typo


def test_docs_runbook_schema_is_drill_schema() -> None:
    published = (Path(__file__).resolve().parents[2] / "docs" / "runbook.schema.json").read_text()
    assert published == json_schema() + "\n", "regenerate: drill schema > docs/runbook.schema.json"


def test_validate_without_path_checks_lints_a_runbook_away_from_its_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rb.yaml").write_text(GOOD)  # none of the paths exist here
    assert main(["validate", str(tmp_path / "rb.yaml")]) == 2
    assert main(["validate", "--no-check-paths", str(tmp_path / "rb.yaml")]) == 0
    assert "paths and backup not checked" in capsys.readouterr().out
