"""``drill fleet``: many drills at once with a shared AWS API budget, one summary table, the worst exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_fleet_command", "cmd_fleet", "render_rows"]


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a number of drills: {text!r} (use 1 or more)")
    return n


def _calls_per_second(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        n = 0.0
    if not 3 <= n <= 1e6:  # NaN and inf fail too; see drills.aws.budget.split_budget for the 3
        raise argparse.ArgumentTypeError(f"not a budget: {text!r} (AWS calls per second, at least 3)")
    return n


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_rows(rows: Sequence[Any]) -> str:
    """The summary table: one line per drill, in the order given (FleetRow values)."""
    head = ("runbook", "verdict", "RTO", "exit", "evidence")
    body = [
        (
            str(r.runbook),
            r.verdict,
            f"{r.rto_seconds:.1f}s" if r.rto_seconds is not None else "-",
            str(r.exit_code),
            _cell(r.evidence) if r.evidence else (r.error or "-"),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in [head, *body]
    )


def _budget_lines(budget: Any) -> list[str]:
    if budget is None:
        return []
    out = []
    for (account, region), s in sorted(budget.stats().items()):
        out.append(
            f"AWS budget {budget.calls_per_second:g}/s for {account} {region}: {s.calls} calls, "
            f"{s.waited} waited for a token ({s.wait_seconds:.1f}s in all, at most {s.max_wait_seconds:.1f}s)"
        )
    return out


def _budget_json(budget: Any) -> list[dict[str, Any]]:
    if budget is None:
        return []
    return [
        {"account": account, "region": region, "calls_per_second": budget.calls_per_second} | vars(s)
        for (account, region), s in sorted(budget.stats().items())
    ]


def cmd_fleet(a: argparse.Namespace) -> int:
    from drills.api import RunOptions
    from drills.fleet import FleetOptions, load_fleet, run_fleet

    runbooks = load_fleet(a.paths)  # exit 2 naming the file before anything starts
    run = RunOptions(signing_key=a.key, evidence_dir=a.evidence_dir, trigger=a.trigger, scratch_root=a.scratch)
    res = run_fleet(runbooks, FleetOptions(parallel=a.parallel, budget=a.budget, run=run))
    if a.json:
        doc = {
            "exit_code": res.exit_code,
            "interrupted": res.interrupted,
            "drills": [r.to_json() for r in res.rows],
            "budget": _budget_json(res.budget),
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(render_rows(res.rows))
        failed = sum(1 for r in res.rows if r.exit_code != 0)
        tail = f"{len(res.rows)} drill(s), {failed} not passed" + (" (interrupted)" if res.interrupted else "")
        print("\n".join([*_budget_lines(res.budget), f"{tail}; exit {res.exit_code}"]))
    return res.exit_code


def add_fleet_command(add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]) -> None:
    sp = add("fleet", cmd_fleet, "run many drills at once with a shared AWS API budget; exit with the worst code")
    sp.add_argument("paths", type=Path, nargs="+", metavar="RUNBOOK|DIR", help="runbooks, or directories of *.yaml")
    sp.add_argument("--parallel", type=_positive_int, default=4, metavar="N", help="drills at once (default 4)")
    sp.add_argument(
        "--budget",
        type=_calls_per_second,
        metavar="CALLS_PER_SECOND",
        help="AWS API calls per second per account and region, for all drills together (default: no limit)",
    )
    sp.add_argument("--evidence-dir", type=Path, help="where every drill writes evidence (default: each runbook's)")
    sp.add_argument("--key", type=Path, help="Ed25519 signing key for every drill (default: each runbook's)")
    sp.add_argument("--trigger", default="scheduled", choices=["manual", "scheduled", "change-triggered"])
    sp.add_argument("--scratch", type=Path, metavar="DIR", help="where local restores are laid out")
    sp.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
