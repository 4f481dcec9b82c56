"""``drill fleet`` given bad input: exit 2 naming the file, one line on stderr, and nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """\
name: {name}
source: {{kind: postgres-dump, archive: {dump}, database: shop}}
objectives: {{rto_seconds: 60}}
validators: {{row_counts: {{orders: {{min: 1}}}}}}
evidence: {{dir: evidence}}
"""


def fleet(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESTORE_DRILLS_HOME": str(tmp / "home")}
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "fleet", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=120,
        check=False,
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    (tmp_path / "shop.dump").write_bytes(b"PGDMP")
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.format(name="good", dump=tmp_path / "shop.dump"))
    return path


def _nothing_started(tmp: Path) -> None:
    assert not (tmp / "home" / "runs").exists()  # no journal: no drill began
    assert not (tmp / "evidence").exists()


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (None, "InputError: {tmp}/missing.yaml: no such runbook"),
        ("name: broken\nsource: {kind: rds-snapshot}\n", "RunbookError: {tmp}/broken.yaml:"),
        ("name: [unclosed\n", "RunbookError: {tmp}/broken.yaml:"),
    ],
)
def test_a_missing_or_broken_runbook_stops_the_whole_fleet(
    tmp_path: Path, good: Path, write: str | None, expected: str
) -> None:
    bad = tmp_path / ("missing.yaml" if write is None else "broken.yaml")
    if write is not None:
        bad.write_text(write)
    res = fleet(tmp_path, str(good), str(bad), "--parallel", "2")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(expected.format(tmp=tmp_path)), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stdout == ""
    _nothing_started(tmp_path)


def test_a_directory_of_runbooks_is_loaded_whole_and_an_empty_one_refused(tmp_path: Path, good: Path) -> None:
    rbs = tmp_path / "rbs"
    rbs.mkdir()
    res = fleet(tmp_path, str(rbs))
    assert (res.returncode, res.stderr.strip()) == (
        2,
        f"InputError: {rbs}: no *.yaml runbook in this directory (name runbook files or a DIR)",
    )
    (rbs / "z.yaml").write_text("name: z\n")  # the second file of the directory is broken
    (rbs / "a.yaml").write_text(good.read_text())
    (rbs / "notes.txt").write_text("not a runbook, not read")
    res = fleet(tmp_path, str(rbs))
    assert res.returncode == 2
    assert res.stderr.startswith(f"RunbookError: {rbs}/z.yaml:"), res.stderr
    _nothing_started(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parallel", "0"], "argument --parallel: not a number of drills: '0'"),
        (["--parallel", "two"], "argument --parallel: not a number of drills: 'two'"),
        (["--budget", "2"], "argument --budget: not a budget: '2' (AWS calls per second, at least 3)"),
        (["--budget", "nan"], "argument --budget: not a budget: 'nan'"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, good: Path, args: list[str], message: str) -> None:
    res = fleet(tmp_path, str(good), *args)
    assert res.returncode == 2
    assert message in res.stderr
    _nothing_started(tmp_path)


def test_the_same_runbook_twice_is_refused(tmp_path: Path, good: Path) -> None:
    res = fleet(tmp_path, str(good), str(tmp_path / "." / "good.yaml"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"InputError: {tmp_path}/good.yaml: given twice (name each runbook once)"
