"""The ``drill`` command: parse arguments, call the API, map errors to exit codes.

Exit codes: 0 passed, 1 drill failed, 2 bad input (nothing started),
3 infrastructure error (could not restore or tear down), 130 interrupted.
Everything heavy is imported inside the command that needs it, so
``drill --help`` and ``drill validate`` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from drills import __version__
from drills.cli_evidence import (
    cmd_evidence_push,
    cmd_keygen,
    cmd_kms_pubkey,
    cmd_pack,
    cmd_report,
    cmd_verify,
)
from drills.cli_ops import add_ops_commands, cmd_history, duration, history_args, out_json
from drills.errors import DrillError, InputError

__all__ = ["main"]


# ---------------------------------------------------------------- commands


def cmd_validate(a: argparse.Namespace) -> int:
    from drills.runbook import load_runbook

    loaded = load_runbook(a.file, check_paths=not a.no_check_paths)
    rb = loaded.runbook
    unchecked = " (paths and backup not checked)" if a.no_check_paths else ""
    if not a.no_check_paths:
        from drills.backends import check_backup

        check_backup(rb.source)  # BackupDefect: exit 1, the same verdict the night's drill would reach
    print(f"{a.file}: ok ({rb.name}: {rb.source.kind}, RTO objective {rb.objectives.rto_seconds}s){unchecked}")
    return 0


def cmd_schema(_a: argparse.Namespace) -> int:
    from drills.runbook import json_schema

    print(json_schema())
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from drills.api import RunOptions, run_drill
    from drills.deliver import Outlets
    from drills.runbook import load_runbook

    loaded = load_runbook(a.file)
    outlets = Outlets.from_env(metrics_textfile=a.metrics_textfile)
    opts = RunOptions(
        outlets=outlets,
        signing_key=a.key,
        evidence_dir=a.evidence_dir,
        trigger=a.trigger,
        keep_seconds=a.keep,
        scratch_root=a.scratch,
    )
    if a.junit is not None:
        _probe_out(a.junit, "--junit")
    res = run_drill(loaded, opts)
    if a.junit is not None:
        from drills.junit import render_junit

        a.junit.write_bytes(render_junit(res.to_json(), loaded.runbook.name))
    if a.json:
        from drills.keep import kept_json

        out_json(res.to_json() | {"kept": kept_json(res.drill)})
    else:
        from drills.render import summary_lines

        print("\n".join(summary_lines(res)), file=sys.stderr)
        if a.keep and res.drill.endpoint is not None and res.error is None:
            where = res.drill.backend.connection_hint() or res.drill.endpoint.public()
            print(f"  kept for {a.keep}s for inspection: {where}", file=sys.stderr)
            print("  `drill sweep` removes it after its expiry", file=sys.stderr)
    return res.exit_code


def _probe_out(path: Path, what: str) -> None:
    """An output file named on the command line must be writable before anything starts."""
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from None


def cmd_teardown(a: argparse.Namespace) -> int:
    from drills.api import finish_teardown
    from drills.errors import InfrastructureError

    try:
        results = finish_teardown(a.run_id)
    except InfrastructureError:  # a teardown that left something: the aborted record says what
        _record_aborted(a.run_id)
        raise
    _record_aborted(a.run_id)
    for r in results:
        print(f"{'removed' if r.deleted else 'LEFT'}: {r.resource.kind} {r.resource.id} {r.detail}")
    if not results:
        print(f"run {a.run_id}: nothing left to tear down")
    return 0


def _record_aborted(run_id: str) -> None:
    """A killed run gets its signed `aborted` record once its teardown ran (issue 10: every run leaves one)."""
    from drills.aborted import record_aborted_from_journal
    from drills.clock import SystemClock

    try:
        path = record_aborted_from_journal(run_id, SystemClock())
    except DrillError as exc:
        print(f"run {run_id}: no aborted record written: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return
    if path is not None:
        print(f"run {run_id} was aborted: signed record {path}")


def cmd_runs(a: argparse.Namespace) -> int:
    from drills.journal import list_runs, read_events, state_home
    from drills.keep import KeepState, keep_state
    from drills.render import run_json, run_line

    runs = list(list_runs())
    root = state_home() / "runs"
    keeps: dict[str, KeepState] = {}
    for r in runs:
        path = root / r.run_id / "journal.jsonl"
        keeps[r.run_id] = keep_state(read_events(path)) if path.is_file() else KeepState()
    if a.json:
        out_json([run_json(r, keeps[r.run_id]) for r in runs])
        return 0
    for r in runs:
        print(run_line(r, keeps[r.run_id]))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    if a.engine == "mariadb":
        from drills.demo.mariadb import run_demo as run_maria

        return run_maria(a.workdir, as_json=a.json)
    from drills.demo.postgres import run_demo

    return run_demo(a.workdir, as_json=a.json)


def cmd_baseline(a: argparse.Namespace) -> int:
    from validators.baseline import capture_baseline, endpoint_from_dsn, write_baseline
    from validators.errors import ValidatorError

    try:
        endpoint = endpoint_from_dsn(a.dsn)
    except ValidatorError as exc:
        raise InputError(exc.message, hint=exc.hint) from None
    try:
        baseline = capture_baseline(endpoint, schemas=a.schema or None)
    except ValidatorError as exc:
        raise _capture_error(exc, "PGPASSWORD" if endpoint.engine == "postgres" else "MYSQL_PWD") from None
    try:
        write_baseline(baseline, a.out)
    except OSError as exc:
        raise InputError(f"--out {a.out}: cannot write the baseline: {exc.strerror or exc}") from None
    n = len(baseline.get("row_counts", {}))
    print(f"baseline written to {a.out} ({n} tables)")
    return 0


# The server answered and refused what was asked: the user's to fix (exit 2). MySQL error codes:
# access denied (1044, 1045, 1698), unknown database (1049). PostgreSQL reports these without a
# SQLSTATE on connect, so its (English) messages are matched; anything else is the environment (3).
_MYSQL_REFUSALS = {1044, 1045, 1049, 1698}
_PG_REFUSALS = (
    "password authentication failed",
    "authentication failed for user",
    "no pg_hba.conf entry",
    "does not exist",
    "no password supplied",
    "permission denied for database",
)


def _capture_error(exc: Exception, password_env: str) -> DrillError:
    """A ValidatorError from `baseline capture`: bad input when the server refused us, else the environment."""
    from drills.errors import InfrastructureError

    cause = exc.__context__  # the driver's error, suppressed from the traceback by `from None`
    args: tuple[Any, ...] = tuple(getattr(cause, "args", ()))
    refused = bool(args) and args[0] in _MYSQL_REFUSALS
    refused |= type(cause).__module__.startswith("psycopg") and any(p in str(cause) for p in _PG_REFUSALS)
    message = getattr(exc, "message", str(exc))
    hint = getattr(exc, "hint", None)
    if refused:
        return InputError(message, hint=hint or f"check the user, the password ({password_env}) and the database")
    return InfrastructureError(message, hint=hint or "is the server running, and reachable from here?")


def cmd_sweep(a: argparse.Namespace) -> int:
    """AWS resources by their tags, then leftovers in this machine's journals; one JSON report."""

    from drills.clock import SystemClock
    from drills.sweep import summary, sweep_local

    clock = SystemClock()
    older_than = timedelta(seconds=a.older_than)
    records: list[dict[str, Any]] = []
    aws: list[dict[str, Any]] | None = None
    skipped: dict[str, str] = {}
    failure: DrillError | None = None
    if a.scope in ("all", "aws"):  # AWS first: a kept AWS run's scratch directory goes after its databases
        try:
            aws = _sweep_aws(a, clock, older_than)
        except DrillError as exc:
            if a.scope == "aws" or exc.exit_code != 2:
                failure = exc
            skipped["aws"] = str(exc)
            print(f"{type(exc).__name__}: AWS not swept: {exc}", file=sys.stderr)
        records += aws or []
    if a.scope in ("all", "local"):
        records += sweep_local(older_than, a.dry_run, clock, aws_records=aws)
    out_json({"resources": records, "summary": summary(records), "skipped": skipped})
    if failure is not None:
        return failure.exit_code
    return 3 if any(r.get("action") == "error" for r in records) else 0


def _sweep_aws(a: argparse.Namespace, clock: Any, older_than: Any) -> list[dict[str, Any]]:
    """The tag-driven AWS sweep; missing credentials or region are an InputError, AWS failures ours."""
    import boto3

    from drills.aws.calls import aws_errors
    from drills.aws.sweep import sweep
    from drills.journal import list_runs
    from drills.sweep import journal_removal

    with aws_errors("drill sweep"):  # a missing profile or a broken config file is botocore's error
        session = boto3.Session(region_name=a.region) if a.region else boto3.Session()
        if not (a.region or session.region_name):
            raise InputError("no AWS region", hint="pass --region or set AWS_DEFAULT_REGION; or sweep --scope local")
        if session.get_credentials() is None:
            raise InputError("no AWS credentials", hint="configure AWS credentials, or sweep --scope local")
        live = {r.run_id for r in list_runs() if r.status == "running"}
        return sweep(
            session,
            older_than,
            a.dry_run,
            lambda rid: rid in live,
            clock,
            region=a.region or session.region_name,
            on_deleted=lambda rec: journal_removal(rec, clock),
        )


# ---------------------------------------------------------------- parser


def _add_data_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]) -> None:
    """Commands that reach databases or AWS directly: baseline capture and the sweeper."""
    sp = add("baseline", cmd_baseline, "capture a schema and row-count baseline from a database")
    bsub = sp.add_subparsers(dest="baseline_command", required=True)
    cap = bsub.add_parser("capture", help="capture a baseline")
    cap.set_defaults(fn=cmd_baseline)
    cap.add_argument(
        "--dsn", required=True, help="postgresql://... or mysql://... (password from PGPASSWORD/MYSQL_PWD)"
    )
    cap.add_argument("--out", type=Path, required=True)
    cap.add_argument("--schema", action="append", help="schema (pg) or database (mysql) to include; repeatable")
    sp = add(
        "sweep",
        cmd_sweep,
        "remove drill resources whose keep (--keep TTL) expired or whose run crashed: local servers and AWS",
    )
    sp.add_argument(
        "--older-than",
        type=duration,
        default=6 * 3600,
        metavar="AGE",
        help="leftovers of crashed runs must be this old (default 6h); kept resources go at their own expiry",
    )
    sp.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    sp.add_argument("--region", help="AWS region to sweep (default: the AWS configuration's)")
    sp.add_argument(
        "--scope",
        choices=["all", "local", "aws"],
        default="all",
        help="all (default: AWS skipped with a warning when no credentials are configured), local or aws",
    )


def _add_evidence_commands(
    add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
) -> None:
    sp = add(
        "verify", cmd_verify, "verify a signed evidence file, every runbook's chain in a directory, or a pack, offline"
    )
    sp.add_argument("file", type=Path, nargs="?")
    sp.add_argument("--chain", type=Path, metavar="DIR", help="check every runbook's chain of records in DIR")
    sp.add_argument(
        "--key", "--keyring", type=Path, help="public key PEM or keyring JSON (required for a FILE or --chain)"
    )
    sp.add_argument("--pack", type=Path, metavar="PACK", help="verify an evidence pack (directory or .zip)")
    sp.add_argument(
        "--head-digest",
        action="append",
        metavar="SHA256",
        help="with --chain: a chain head digest pinned earlier (printed by --chain); repeatable",
    )
    sp.set_defaults(logs=False)
    sp = add("pack", cmd_pack, "collect a period's verified evidence into a pack for auditors (HTML report)")
    sp.add_argument("--evidence-dir", type=Path, required=True, help="where the drills wrote their evidence")
    sp.add_argument("--key", type=Path, required=True, help="public key PEM or keyring JSON the records must verify")
    sp.add_argument("--since", required=True, help="period start: YYYY-MM-DD (UTC) or an ISO 8601 time")
    sp.add_argument("--until", help="period end, excluded (default: now)")
    sp.add_argument("--runbook", action="append", help="only this runbook (repeatable)")
    sp.add_argument("--out", type=Path, required=True, help="a new directory, or FILE.zip")
    sp.set_defaults(logs=False)
    sp = add("evidence", cmd_evidence_push, "evidence storage: `drill evidence push RUNBOOK` (evidence.s3)")
    esub = sp.add_subparsers(dest="evidence_command", required=True)
    push = esub.add_parser("push", help="put the runbook's records that are not on S3 yet, under Object Lock")
    push.set_defaults(fn=cmd_evidence_push, logs=False)
    push.add_argument("file", type=Path, metavar="RUNBOOK")
    push.add_argument("--key", type=Path, required=True, help="public key or keyring the records must verify against")
    push.add_argument("--evidence-dir", type=Path, help="default: the runbook's evidence.dir")
    sp = add("kms-pubkey", cmd_kms_pubkey, "export the public key of a KMS evidence key, for auditors")
    sp.add_argument("--key-id", required=True, help="KMS key id or ARN (ECC_NIST_P256, SIGN_VERIFY)")
    sp.add_argument("--out", type=Path, required=True)
    sp.set_defaults(logs=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drill",
        description="Prove database backups restore: isolated restore drills with validators, measured RTO/RPO, "
        "teardown on every path and signed evidence.",
    )
    p.add_argument("--version", action="version", version=f"restore-drills {__version__}")
    p.add_argument("--log-format", choices=["console", "json"], default="console", help="log output on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("run", cmd_run, "run a drill from a runbook")
    sp.add_argument("file", type=Path)
    sp.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    sp.add_argument("--key", type=Path, help="Ed25519 signing key (default: the runbook's, else the user's)")
    sp.add_argument("--evidence-dir", type=Path, help="where to write evidence (default: the runbook's)")
    sp.add_argument("--trigger", default="manual", choices=["manual", "scheduled", "change-triggered"])
    sp.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML: each check a test case")
    sp.add_argument("--keep", type=duration, metavar="TTL", help="incident mode: keep the restored database for TTL")
    sp.add_argument(
        "--scratch",
        type=Path,
        metavar="DIR",
        help="where local restores are laid out (default: the runbook's scratch_dir, $RESTORE_DRILLS_SCRATCH, /tmp)",
    )
    sp.add_argument(
        "--metrics-textfile",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics for node_exporter's textfile collector (a .prom file or a directory); "
        "other outlets: docs/metrics.md",
    )
    history_args(add("history", cmd_history, "one row per verified drill record: verdict, RTO, phases, RPO, size"))
    sp = add("validate", cmd_validate, "check a runbook without running it")
    sp.add_argument("file", type=Path)
    sp.add_argument(
        "--no-check-paths",
        action="store_true",
        help="do not require the backups, baselines and keys to exist here (e.g. linting runbooks in CI)",
    )
    sp.set_defaults(logs=False)
    add("schema", cmd_schema, "print the runbook JSON Schema").set_defaults(logs=False)
    sp = add("keygen", cmd_keygen, "write an Ed25519 key pair for signing evidence")
    sp.add_argument("--out", type=Path, required=True, help="private key path; the public key gets .pub")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(logs=False)
    _add_evidence_commands(add)
    add_ops_commands(add)
    sp = add("report", cmd_report, "render a verified evidence file as a Markdown report for auditors")
    sp.add_argument("file", type=Path)
    sp.add_argument("--key", type=Path, required=True, help="public key PEM or keyring JSON")
    sp.add_argument("--out", type=Path, help="write here instead of stdout")
    sp.set_defaults(logs=False)
    sp = add("teardown", cmd_teardown, "remove what a crashed run left behind, from its journal")
    sp.add_argument("run_id")
    sp = add("runs", cmd_runs, "list runs and their states")
    sp.add_argument("--json", action="store_true")
    sp = add("demo", cmd_demo, "build a source database and backups, then drill them (nothing else needed)")
    sp.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    sp.add_argument("--engine", choices=["postgres", "mariadb"], default="postgres")
    sp.add_argument("--json", action="store_true")
    _add_data_commands(add)
    return p


#: Exit code after the reader of our output went away (`drill verify ... | head`): 128 + SIGPIPE,
#: what a shell reports for any Unix tool stopped that way.
EXIT_BROKEN_PIPE = 141


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _report(exc: DrillError) -> int:
    """``ErrorType: message`` on one line of stderr; the class's exit code."""
    with contextlib.suppress(OSError):  # stderr itself may be a closed pipe
        print(f"{type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
    return exc.exit_code


def _translate(exc: Exception) -> DrillError | None:
    """Errors of the layers below that reached the CLI, as ours; None for a bug."""
    from drills.errors import InfrastructureError

    module = type(exc).__module__
    if module.startswith("botocore") or module.startswith("boto3"):
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError", "ProfileNotFound"):
            return InputError(f"AWS: {_one_line(str(exc))}", hint="configure AWS credentials and a region")
        return InfrastructureError(f"AWS: {_one_line(str(exc))}")
    if module.startswith("validators"):  # ValidatorError: a validator could not run at all
        return InfrastructureError(_one_line(str(exc)))
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{exc.filename}: no such file")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return InfrastructureError(f"{where}{exc.strerror or exc}")
    return None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail on the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _guard_std_fds() -> None:
    """Hold fds 0-2 open (on /dev/null when the caller closed them, e.g. ``drill run x >&-`` in cron).

    Otherwise the next file we open (a journal) would become fd 1, and every server or
    ``pg_restore`` we start would write its output into it; and ``print`` has nowhere to go.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            got = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115 - lives as sys.std*


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error ends as one line on stderr and its exit code, never a traceback.

    A bug (an exception no layer translated) is a one-line ``InternalError`` with exit 3, its
    traceback shown with ``--log-level debug``.
    """
    _guard_std_fds()
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if getattr(a, "logs", True):  # structlog (and the asyncio it pulls in) only for commands that log
            from drills.logs import configure

            configure(a.log_format, a.log_level)
        code: int = a.fn(a)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers, not at exit
    except DrillError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            print("Interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        ours = _translate(exc)
        if ours is not None:
            return _report(ours)
        if a.log_level == "debug":
            traceback.print_exc()
        with contextlib.suppress(OSError):
            print(
                f"InternalError: {type(exc).__name__}: {_one_line(str(exc))} "
                "(a bug in restore-drills: rerun with --log-level debug for where, and report it)",
                file=sys.stderr,
            )
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
