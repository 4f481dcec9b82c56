"""Every runbook shipped in runbooks/ parses (paths point at the user's backups, so they are not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.runbook import parse_runbook

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "runbooks").glob("*.yaml"))


def test_there_is_an_example_for_every_source_kind() -> None:
    kinds = {parse_runbook(p.read_text(), str(p)).source.kind for p in EXAMPLES}
    assert kinds == {
        "postgres-pitr",
        "postgres-dump",
        "mariadb-pitr",
        "mariadb-dump",
        "rds-snapshot",
        "rds-pitr",
        "aurora-snapshot",
        "aurora-pitr",
        "pgbackrest",
        "barman",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runbook_parses(path: Path) -> None:
    rb = parse_runbook(path.read_text(), str(path))
    assert rb.objectives.rto_seconds > 0
