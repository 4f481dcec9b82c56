"""A third-party backend, installed as a ``restore_drills.backends`` entry point, drilled by the real CLI.

tests/latest_dump_backend.py is one module; a throwaway ``*.dist-info`` on PYTHONPATH publishes its
declaration exactly as ``pip install`` of a package with that entry point would. Every command below is a
fresh ``drill`` process: nothing is registered by hand, the registry finds the backend by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A site directory holding only the metadata of a package that declares the backend."""
    info = tmp_path / "site" / "latest_dump_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: latest-dump-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[restore_drills.backends]\nlatest-dump = latest_dump_backend:DECLARATION\n")
    return tmp_path / "site"


def drill(*args: str, site: Path | None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTHONPATH"))}
    if site is not None:
        env["PYTHONPATH"] = f"{site}{os.pathsep}{TESTS}"
    cmd = [sys.executable, "-m", "drills.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def runbook(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rb.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: nightly-dump
            source: {kind: latest-dump, directory: dumps, database: shop}
            objectives: {rto_seconds: 120, rpo_seconds: 864000}
            """
        )
        + extra
    )
    return path


def test_the_entry_point_adds_the_kind_to_validate_and_schema(tmp_path: Path, plugin_site: Path) -> None:
    rb = runbook(tmp_path / "d")
    missing = drill("validate", str(rb), site=plugin_site)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]  # one line
    assert f"{rb}:2: source.directory: path does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    (rb.parent / "dumps").mkdir()
    (rb.parent / "dumps" / "x.pgc").write_bytes(b"a file is there; validate does not read it")
    ok = drill("validate", str(rb), site=plugin_site)
    assert ok.returncode == 0, ok.stderr
    assert "nightly-dump: latest-dump" in ok.stdout
    schema = json.loads(drill("schema", site=plugin_site).stdout)
    assert "latest-dump" in schema["properties"]["source"]["discriminator"]["mapping"]
    without = drill("validate", str(rb), site=None)  # the same runbook where the package is not installed
    assert without.returncode == 2, without.stderr
    assert "kind must be one of:" in without.stderr
    assert "latest-dump" not in without.stderr.split("kind must be one of:")[1]


def test_drill_run_restores_the_newest_dump_through_the_machine(
    tmp_path: Path, plugin_site: Path, demo_source: object, demo_dump: Path, drill_home: Path
) -> None:
    from drills.demo.postgres import DemoSource

    assert isinstance(demo_source, DemoSource)
    everything = demo_source.rows_before_target + demo_source.rows_after_target
    rb = runbook(
        tmp_path / "d",
        f"validators:\n  row_counts: {{orders: {{equals: {everything}}}, customers: {{equals: 2000}}}}\n",
    )
    (tmp_path / "d").chmod(0o755)
    dumps = rb.parent / "dumps"
    dumps.mkdir()
    dumps.chmod(0o755)
    shutil.copy(demo_dump, dumps / "a-newest.pgc")
    (dumps / "z-older.pgc").write_bytes(b"last week's dump, truncated")  # picked by name it would fail the drill
    os.utime(dumps / "z-older.pgc", (1_700_000_000, 1_700_000_000))
    res = drill("run", "--json", str(rb), site=plugin_site)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["verdict"] == "passed" and out["rto_met"] is True
    assert {f["check"]: f["actual"] for f in out["findings"]}["orders rows"] == everything
    ev = read_and_verify(Path(out["evidence"]), load_verifiers(drill_home / "keys" / "drill.pub"))["predicate"]
    assert ev["recovery_point"]["archive"] == str(dumps / "a-newest.pgc")
    assert ev["results"]["rpo_method"].startswith("dump creation time")  # the backend's RPO reference, not api's
    assert ev["results"]["achieved_rpo_ms"] is not None
    assert ev["teardown"]["resources"] and all(r["deleted"] for r in ev["teardown"]["resources"])
    assert not list(Path(tempfile.gettempdir()).glob(f"restore-drill-{out['run_id']}*"))


def test_an_empty_folder_is_a_failed_drill_with_evidence(tmp_path: Path, plugin_site: Path, drill_home: Path) -> None:
    rb = runbook(tmp_path / "d")
    (rb.parent / "dumps").mkdir()
    res = drill("run", "--json", str(rb), site=plugin_site)
    assert res.returncode == 1, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["verdict"] == "failed" and out["failed_state"] == "preflight"
    assert "no archive matching *.pgc" in out["error"]
    assert out["evidence"] and Path(out["evidence"]).exists()
