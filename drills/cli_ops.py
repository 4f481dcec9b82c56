"""The ``drill`` commands for running drills at scale: doctor, export-asl (Step Functions), history;
and the two helpers every command shares (durations on the command line, JSON on stdout)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drills.cli_evidence import given_file
from drills.cli_fleet import add_fleet_command
from drills.errors import InputError

__all__ = ["add_ops_commands", "cmd_doctor", "cmd_export_asl", "cmd_history", "duration", "history_args", "out_json"]


def duration(text: str) -> int:
    """``90s``, ``15m``, ``6h``, ``2d`` → seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30m, 6h, 2d)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def out_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def cmd_doctor(a: argparse.Namespace) -> int:
    from drills.doctor import diagnose
    from drills.doctor_facts import gather
    from drills.evidence.keys import load_verifiers

    if a.key is not None:
        given_file(a.key, "--key")
    runbooks, runs, keys = gather(a.paths, load_verifiers(a.key) if a.key else None)
    findings = diagnose(runbooks, runs, keys, datetime.now(UTC))
    if a.json:
        out_json(
            {"ok": not findings, "runbooks": [r.name for r in runbooks], "findings": [f.to_dict() for f in findings]}
        )
    else:
        for f in findings:
            print(f"{f.check:<22} {f.message}")
        print(
            f"{len(runbooks)} runbook(s), {len(runs)} run(s): "
            + (f"{len(findings)} need a human" if findings else "ok")
        )
    if a.notify and findings:  # RESTORE_DRILLS_WEBHOOK_URL / _SNS_TOPIC_ARN (docs/metrics.md); never changes the exit
        from drills.deliver import Outlets, deliver_text
        from drills.notify import doctor_message

        for d in deliver_text(*doctor_message([f.to_dict() for f in findings], len(runbooks)), Outlets.from_env()):
            if not d["ok"]:
                print(f"{d['channel']} not delivered ({d['target']}): {d['error']}", file=sys.stderr)
    return 1 if findings else 0


def _export_fleet(a: argparse.Namespace) -> int:
    """``--fleet``: a Map over the runbooks, ``--max-concurrency`` at a time (drills/asl_fleet.py)."""
    from drills.asl_fleet import build_fleet_definition
    from drills.runbook import load_runbook

    if not a.fleet:
        raise InputError("export-asl: several runbooks, or --max-concurrency, need --fleet")
    if a.runbook_uri:
        raise InputError("export-asl --fleet: --runbook-uri names one runbook; the fleet uses each file's path")
    loaded = [load_runbook(f, check_paths=False) for f in a.files]
    definition = build_fleet_definition(
        loaded,
        queue_url=a.queue_url,
        runbook_uris=[f.resolve().as_uri() for f in a.files],
        max_concurrency=a.max_concurrency or len(a.files),
        dialect=a.dialect,
    )
    _write_definition(a, definition)
    n = a.max_concurrency or len(a.files)
    print(f"fleet of {len(loaded)} drills, {n} at a time, written to {a.out}; run at least {n} workers")
    return 0


def _write_definition(a: argparse.Namespace, definition: dict[str, Any]) -> None:
    from drills.asl import role_policy

    try:
        a.out.write_text(json.dumps(definition, indent=2) + "\n")
        if a.role_policy:
            a.role_policy.write_text(json.dumps(role_policy(), indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write {exc.filename}: {exc.strerror}") from None


def cmd_export_asl(a: argparse.Namespace) -> int:
    from drills.asl import build_definition
    from drills.runbook import load_runbook

    if a.fleet or len(a.files) > 1 or a.max_concurrency is not None:
        return _export_fleet(a)
    loaded = load_runbook(a.files[0], check_paths=False)
    definition = build_definition(
        loaded, queue_url=a.queue_url, runbook_uri=a.runbook_uri or a.files[0].resolve().as_uri(), dialect=a.dialect
    )
    _write_definition(a, definition)
    print(f"state machine for {loaded.runbook.name} written to {a.out} ({len(definition['States'])} states)")
    return 0


def _since(text: str) -> datetime:
    """``30d`` (back from now) or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r}: not a date or a duration", hint="e.g. 30d or 2026-11-01") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def cmd_history(a: argparse.Namespace) -> int:
    import hashlib

    from drills.api import default_key_path
    from drills.evidence.keys import load_verifiers
    from drills.journal import state_home
    from drills.ledger import outlook, read_history, render_csv, render_table, select

    key = a.key or default_key_path().with_suffix(".pub")
    given_file(key, "--key")
    if a.evidence_s3 and a.evidence_dir:
        raise InputError("give --evidence-dir or --evidence-s3, not both")
    evidence_dir = a.evidence_dir or Path("evidence")
    if not a.evidence_s3 and not evidence_dir.is_dir():
        raise InputError(f"evidence directory {evidence_dir} does not exist", hint="pass --evidence-dir DIR")
    since = _since(a.since) if a.since else None
    keys_sha = hashlib.sha256(key.read_bytes()).hexdigest()
    home = state_home()
    if a.evidence_s3:
        rows, problems = _s3_history(a, load_verifiers(key), keys_sha, home if home.is_dir() else None)
    else:
        rows, problems = read_history(evidence_dir, load_verifiers(key), keys_sha, home if home.is_dir() else None)
        problems = [f"NOT VERIFIED (not shown): {p}" for p in problems]
    rows = select(rows, a.runbook, since)
    if a.plot is not None:
        _plot_history(rows, a)
    if a.json:
        from dataclasses import asdict

        out_json([asdict(r) for r in rows])
    elif a.csv:
        sys.stdout.write(render_csv(rows))
    else:
        sys.stdout.write(render_table(rows) + "".join(f"\n{line}" for line in outlook(rows)) + "\n")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def _s3_history(a: argparse.Namespace, verifiers: Any, keys_sha: str, home: Path | None) -> tuple[list[Any], list[str]]:
    """``--evidence-s3 s3://BUCKET/PREFIX``: the records the drills pushed (evidence.s3), verified as local ones."""
    from drills.aws.clients import aws_client
    from drills.evidence.s3 import S3Store, parse_s3_url
    from drills.ledger import read_s3_history

    bucket, prefix = parse_s3_url(a.evidence_s3)
    client = aws_client("s3")
    store = S3Store(bucket, prefix, 0, None, client=client)  # retention 0: a reader, never pushes
    rows, problems, read = read_s3_history(store, verifiers, keys_sha, home, a.runbook)
    print(
        f"s3://{bucket}/{prefix}: {read.listed} record(s), {read.checked} checked now, "
        f"{read.listed - read.checked} from the cache; {client.calls} S3 call(s)",
        file=sys.stderr,
    )
    return rows, problems


def _plot_history(rows: Sequence[Any], a: argparse.Namespace) -> None:
    """``--plot``: the chart of the selected rows (one runbook), as SVG or PNG by the file's suffix."""

    from drills.evidence.chart import ChartPoint, available, rto_chart
    from drills.ledger import PHASES

    fmt = a.plot.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise InputError(f"--plot {a.plot}: the file must end in .svg or .png")
    if not a.runbook:
        raise InputError("--plot draws one runbook's trend: give --runbook NAME")
    if not available():
        raise InputError("--plot needs matplotlib", hint='pip install "restore-drills[plot]"')
    points = [
        ChartPoint(
            datetime.fromisoformat(r.finished_at.replace("Z", "+00:00")),
            r.verdict,
            r.rto_ms,
            tuple((ph, v) for ph in PHASES if (v := getattr(r, f"{ph}_ms")) is not None),
            r.rto_objective_ms,
            r.restored_bytes,
            bool(r.regression),
        )
        for r in rows
    ]
    image = rto_chart(points, f"{a.runbook}: RTO per drill", fmt)
    if image is None:
        raise InputError(f"no drill of {a.runbook} with a measured RTO to plot")
    try:
        a.plot.write_bytes(image)
    except OSError as exc:
        raise InputError(f"--plot {a.plot}: {exc.strerror or exc}") from None
    print(f"RTO trend of {a.runbook} ({len(points)} drills) written to {a.plot}", file=sys.stderr)


def add_ops_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]) -> None:
    """Commands for running drills at scale: Step Functions export, fleets and the doctor."""
    add_fleet_command(add)
    sp = add("export-asl", cmd_export_asl, "the drill as an AWS Step Functions definition (rds-snapshot, rds-pitr)")
    sp.add_argument("files", type=Path, nargs="+", metavar="RUNBOOK")
    sp.add_argument("--fleet", action="store_true", help="one execution drills every RUNBOOK (a Map state)")
    sp.add_argument("--max-concurrency", type=int, metavar="N", help="--fleet: at most N drills at a time")
    sp.add_argument("--out", type=Path, required=True, help="where to write the ASL JSON")
    sp.add_argument("--queue-url", required=True, help="SQS queue the drill worker (drill sfn-worker) reads")
    sp.add_argument("--runbook-uri", help="where the worker finds the runbook (default: this file's file:// URI)")
    sp.add_argument("--role-policy", type=Path, help="also write the state machine role's IAM policy here")
    sp.add_argument("--dialect", choices=["aws", "boto"], default="aws", help="boto: member names as moto wants")
    sp.set_defaults(logs=False)
    from drills.cli_sfn import add_sfn_commands  # sfn-worker: the worker of the exported machine

    add_sfn_commands(add)
    sp = add("doctor", cmd_doctor, "what needs a human: overdue, failing or slow drills, leftovers, expiring keys")
    sp.add_argument("paths", type=Path, nargs="+", metavar="RUNBOOK|DIR")
    sp.add_argument("--key", type=Path, help="public key or keyring the records must verify against")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--notify", action="store_true", help="send findings to the webhook / SNS topic (docs/metrics.md)")
    sp.set_defaults(logs=False)


def history_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--evidence-dir", type=Path, help="evidence directory (default: ./evidence)")
    sp.add_argument(
        "--evidence-s3", metavar="s3://BUCKET/PREFIX", help="read the S3 evidence store (a runbook's evidence.s3)"
    )
    sp.add_argument("--key", type=Path, help="public key or keyring (default: the user's default key)")
    sp.add_argument("--runbook", metavar="NAME", help="only this runbook")
    sp.add_argument("--since", metavar="WHEN", help="a duration back from now (30d) or a date (2026-11-01)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list of rows")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    sp.add_argument(
        "--plot", type=Path, metavar="FILE", help="also draw the RTO trend of --runbook as FILE.svg or FILE.png"
    )
