"""`drill run --junit FILE` on the real demo backup: what a CI test report shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

from drills.demo.postgres import DemoSource


def run(runbook: Path, junit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "run", str(runbook), "--junit", str(junit), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=dict(os.environ),
    )


def test_junit_lists_every_check_and_objective_and_fails_exactly_the_failed_one(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    d = tmp_path / "d"
    shutil.copytree(demo_source.workdir, d, ignore=shutil.ignore_patterns("source", "evidence"))
    d.chmod(0o755)
    ok = run(d / "runbook.yaml", tmp_path / "pass.xml")
    assert ok.returncode == 0, ok.stderr[-2000:]
    suite = ET.parse(tmp_path / "pass.xml").getroot()  # noqa: S314 - our own output
    names = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
    assert ("smoke", "no order committed after the target") in names
    assert ("objectives", "RTO within 60s") in names and ("drill", "teardown removed everything") in names
    assert suite.get("failures") == "0" and int(suite.get("tests") or 0) == len(names)

    text = (d / "runbook.yaml").read_text()
    (d / "runbook.yaml").write_text(text.replace("expect: 0", "expect: 1", 1))
    bad = run(d / "runbook.yaml", tmp_path / "fail.xml")
    assert bad.returncode == 1
    suite = ET.parse(tmp_path / "fail.xml").getroot()  # noqa: S314 - our own output
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["no order committed after the target"]
    assert "expected" in (failed[0].find("failure").text or "")  # type: ignore[union-attr]
    assert suite.get("failures") == "1"


def test_an_unwritable_junit_path_is_refused_before_anything_starts(demo_source: DemoSource, tmp_path: Path) -> None:
    res = run(demo_source.runbook, tmp_path / "no" / "such" / "dir" / "x.xml")
    assert res.returncode == 2 and "--junit" in res.stderr
