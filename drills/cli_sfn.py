"""``drill sfn-worker``: the worker of an exported Step Functions drill (docs/stepfunctions.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from drills.cli_evidence import given_file
from drills.errors import InputError

__all__ = ["add_sfn_commands", "cmd_sfn_worker"]


def cmd_sfn_worker(a: argparse.Namespace) -> int:
    import boto3

    from drills.sfn_worker import Worker

    roots = a.runbook_root or [Path.cwd()]
    for root in roots:
        if not root.is_dir():
            raise InputError(f"--runbook-root {root}: not a directory")
    if a.key is not None:
        given_file(a.key, "--key")
    if not 1 <= a.wait_seconds <= 20:
        raise InputError(f"--wait-seconds {a.wait_seconds}: SQS long polls wait 1 to 20 seconds")
    worker = Worker(boto3.Session(), a.queue_url, roots, wait_seconds=a.wait_seconds, signing_key=a.key)
    return worker.serve(once=a.once)


def add_sfn_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]) -> None:
    sp = add("sfn-worker", cmd_sfn_worker, "answer the tasks of exported Step Functions drills (drill export-asl)")
    sp.add_argument("--queue-url", "--queue", dest="queue_url", required=True, help="the SQS queue of the machine")
    sp.add_argument(
        "--runbook-root",
        type=Path,
        action="append",
        metavar="DIR",
        help="runbooks the worker may run live here (repeatable; default: the current directory)",
    )
    sp.add_argument("--key", type=Path, help="evidence signing key (default: the runbook's, else the user's)")
    sp.add_argument("--once", action="store_true", help="answer at most one message, then exit")
    sp.add_argument("--wait-seconds", type=int, default=20, help="SQS long-poll wait, 1-20 (default 20)")
