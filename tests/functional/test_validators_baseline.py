"""Baselines: capture from a real server, write, load back (bad files: tests/unit/test_baseline_files.py)."""

from __future__ import annotations

import json
from pathlib import Path

from servers import Shop

from validators.baseline import capture_baseline, load_baseline, write_baseline


def test_capture_write_load_roundtrip(shop: Shop, tmp_path: Path) -> None:
    _, ep = shop
    b = capture_baseline(ep, parallelism=2)
    assert b["format"] == 1 and b["engine"] == ep.engine
    assert b["server_version"] and b["captured_at"].endswith("Z")
    assert sorted(b["row_counts"].values()) == [50, 200]
    path = write_baseline(b, tmp_path / "sub" / "baseline.json")
    assert load_baseline(path) == json.loads(json.dumps(b))
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind
