from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def drill_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Journals, default keys and scratch dirs of each test stay in its own tmp dir."""
    home = tmp_path / "drill-home"
    monkeypatch.setenv("RESTORE_DRILLS_HOME", str(home))
    monkeypatch.setenv("RESTORE_DRILLS_SCRATCH", str(tmp_path))
    yield home
