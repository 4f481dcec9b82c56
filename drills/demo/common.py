"""What both demos share: run the drill as a user would, verify its evidence, report it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["drill_and_report"]


def drill_and_report(runbook: Path, public_key: Path | None, workdir: Path, *, as_json: bool, started: float) -> int:
    """Run the demo's drill as a user would, verify its evidence, and report (shared by both engines)."""
    from drills.api import RunOptions, run_drill
    from drills.evidence.keys import load_verifiers
    from drills.evidence.store import read_and_verify
    from drills.render import summary_lines
    from drills.runbook import load_runbook

    res = run_drill(load_runbook(runbook), RunOptions(trigger="manual"))
    verified = False
    if res.evidence is not None and public_key is not None:
        read_and_verify(res.evidence, load_verifiers(public_key))
        verified = True
    if as_json:
        out = res.to_json() | {"public_key": str(public_key), "workdir": str(workdir), "evidence_verified": verified}
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    else:
        lines = [
            *summary_lines(res),
            f"  evidence verified with {public_key}: {'yes' if verified else 'NO'}",
            f"  runbook: {runbook}",
            f"  workdir: {workdir}",
            f"  verify yourself: drill verify {res.evidence} --key {public_key}",
            f"demo finished in {time.monotonic() - started:.1f}s",
        ]
        print("\n".join(lines), file=sys.stderr)
    return res.exit_code if verified else max(res.exit_code, 1)
