"""Baselines: capture from a real server, write, load back; bad files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import Shop

from validators.baseline import capture_baseline, load_baseline, write_baseline
from validators.errors import ValidatorError


def test_capture_write_load_roundtrip(shop: Shop, tmp_path: Path) -> None:
    _, ep = shop
    b = capture_baseline(ep, parallelism=2)
    assert b["format"] == 1 and b["engine"] == ep.engine
    assert b["server_version"] and b["captured_at"].endswith("Z")
    assert sorted(b["row_counts"].values()) == [50, 200]
    path = write_baseline(b, tmp_path / "sub" / "baseline.json")
    assert load_baseline(path) == json.loads(json.dumps(b))
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


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
