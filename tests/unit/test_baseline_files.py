"""Baseline files that cannot be used fail clearly, naming the file and what is wrong (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from validators.baseline import load_baseline
from validators.errors import ValidatorError


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "baseline.json:1:2: baseline is not valid JSON"),
        ("[]", "a baseline is a JSON object"),
        ('{"format": 2}', "baseline format 2 is not supported"),
        ('{"format": 1, "engine": "oracle"}', "engine must be postgres or mysql"),
        ('{"format": 1, "engine": "mysql", "row_counts": {}}', "`schema.tables` is missing"),
        ('{"format": 1, "engine": "mysql", "schema": {"tables": {}}, "row_counts": {"t": -1}}', "row_counts.t must be"),
    ],
)
def test_bad_baseline_files(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "baseline.json"
    p.write_text(content)
    with pytest.raises(ValidatorError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_baseline(p)


def test_missing_baseline_file(tmp_path: Path) -> None:
    with pytest.raises(ValidatorError, match=r"cannot read baseline .*No such file"):
        load_baseline(tmp_path / "nope.json")
