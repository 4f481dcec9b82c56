"""The GitHub Actions workflows are valid YAML and call only `drill` commands and options that exist.

A workflow with a YAML error is rejected by GitHub without a run, so a broken
scheduled drill would simply never happen; nobody would see a failure.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from drills.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_yaml_with_jobs(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict) and doc.get("jobs"), path


def test_every_drill_invocation_parses() -> None:
    parser = build_parser()
    seen = 0
    for path in WORKFLOWS:
        text = path.read_text().replace("\\\n", " ")
        for m in re.finditer(r"\.venv/bin/drill ([^|;&\n>]+)", text):
            args = [a for a in shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", m.group(1))) if a]
            parser.parse_args(args)  # SystemExit (argparse error) fails the test
            seen += 1
    assert seen >= 4
