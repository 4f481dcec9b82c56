"""Many drills at once (``drill fleet``): worker threads, one shared AWS API budget, one summary.

Why threads, not processes: a drill spends its life waiting on AWS (a restore takes minutes to
hours of describe polls), so the GIL costs nothing, and a budget shared by threads is a lock
around a token bucket (:mod:`drills.aws.budget`) instead of a budget server between processes.
What a drill relies on holds on a thread too:

* logs: the run id is bound with structlog's context variables, and each thread has its own context;
* evidence: appends to a chain take an ``flock`` on ``.chain.lock``, which belongs to an open file
  description, so two threads of one process exclude each other as two processes do;
* signals reach only the main thread: here it sets a :class:`~drills.cancel.CancelToken` that
  every drill thread watches (its clock's sleep wakes and raises ``Interrupted`` while its states
  run; teardown and evidence ignore it, as a lone drill defers a signal), so every running drill
  tears down and writes its evidence, and drills not started yet are not started;
* AWS: each drill makes its own boto3 session (sessions are not thread-safe; clients are).

What a thread cannot do that a lone drill does: a check running in the validators when the fleet
is signalled is not cancelled on the server; it ends (bounded by its statement timeout) and the
drill is interrupted at its next state.

Exit code: the worst of the drills' (:data:`SEVERITY`), so a scheduler sees one number.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from drills import cancel
from drills.api import RunOptions, run_drill
from drills.backends import SOURCE_BACKENDS, backend_factory
from drills.clock import Clock, SystemClock
from drills.errors import DrillError, InputError, PreflightError
from drills.runbook import LoadedRunbook, load_runbook

__all__ = ["SEVERITY", "FleetOptions", "FleetResult", "FleetRow", "load_fleet", "run_fleet", "worst_exit"]

log = structlog.get_logger("drills.fleet")

#: Exit codes from worst to best. 3 first: something could not be restored or torn down, and
#: resources may be left: that needs a human even when the fleet was also interrupted (whoever
#: signalled it knows they did). Then 130 (interrupted: results are missing), 2 (a drill could not
#: run: its backup is untested), 1 (a drill ran and failed), 0. A code not listed counts as 3.
SEVERITY = (3, 130, 2, 1, 0)

NOT_RUN = "not-run"  # the verdict of a drill the fleet never started (it was interrupted first)


def worst_exit(codes: Sequence[int]) -> int:
    """The worst of ``codes`` by :data:`SEVERITY`; 0 for none."""
    rank = {code: i for i, code in enumerate(SEVERITY)}
    return min((c if c in rank else 3 for c in codes), key=rank.__getitem__, default=0)


@dataclass(frozen=True)
class FleetRow:
    runbook: Path
    name: str
    verdict: str
    exit_code: int
    run_id: str | None = None
    rto_seconds: float | None = None
    evidence: Path | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": str(self.runbook),
            "name": self.name,
            "run_id": self.run_id,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "rto_seconds": self.rto_seconds,
            "evidence": str(self.evidence) if self.evidence else None,
            "error": self.error,
        }


@dataclass
class FleetResult:
    rows: list[FleetRow]
    interrupted: bool
    budget: Any = None  # drills.aws.budget.Budget, when one was set

    @property
    def exit_code(self) -> int:
        return worst_exit([r.exit_code for r in self.rows] + ([130] if self.interrupted else []))


@dataclass(frozen=True)
class FleetOptions:
    parallel: int = 4
    budget: float | None = None  # AWS calls per second per (account, region); None: no limit
    run: RunOptions = field(default_factory=RunOptions)  # for every drill: evidence dir, key, clock...
    # a boto3 Session for one drill (tests: moto); None: each AWS drill makes its own default session
    session_for: Callable[[LoadedRunbook], Any] | None = None
    budget_clock: Clock = field(default_factory=SystemClock)  # the budget counts real seconds
    account: str | None = None  # the budget's account; None: asked of STS once


def _expand(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.glob("*.yaml") if q.is_file())
            if not found:
                raise InputError(f"{p}: no *.yaml runbook in this directory", hint="name runbook files or a DIR")
            out += found
        elif not p.exists():
            raise InputError(f"{p}: no such runbook", hint="check the path")
        else:
            out.append(p)
    seen: set[Path] = set()
    for p in out:
        if p.resolve() in seen:
            raise InputError(f"{p}: given twice", hint="name each runbook once")
        seen.add(p.resolve())
    return out


def load_fleet(paths: Sequence[Path]) -> list[LoadedRunbook]:
    """Every runbook, loaded and checked before any drill starts: one bad file is exit 2 for all."""
    if not paths:
        raise InputError("no runbooks given", hint="drill fleet RUNBOOK... or DIR")
    loaded = []
    for p in _expand(paths):
        try:
            loaded.append(load_runbook(p))
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}", hint="check the runbook's path and permissions") from None
    return loaded


def _is_aws(lr: LoadedRunbook) -> bool:
    return SOURCE_BACKENDS[lr.runbook.source.kind] in ("rds", "aurora")


def _account(opts: FleetOptions, first: LoadedRunbook) -> str:
    """The account the budget is for: one credential chain per process, so one STS call at the start."""
    if opts.account is not None:
        return opts.account
    from drills.aws.calls import aws_errors, client_config

    session = opts.session_for(first) if opts.session_for else None
    with aws_errors("drill fleet --budget: which AWS account", preflight=True):
        if session is None:
            import boto3

            session = boto3.Session(region_name=getattr(first.runbook.source, "region", None))
        try:
            ident = session.client("sts", config=client_config()).get_caller_identity()
        except Exception as exc:
            if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
                raise InputError(
                    f"drill fleet --budget: {exc}", hint="configure AWS credentials and a region"
                ) from None
            raise
    return str(ident["Account"])


def _make_budget(opts: FleetOptions, runbooks: list[LoadedRunbook]) -> Any:
    aws = [lr for lr in runbooks if _is_aws(lr)]
    if opts.budget is None or not aws:
        return None
    from drills.aws.budget import Budget

    account = _account(opts, aws[0])
    return Budget(opts.budget, cancel.CancellableClock(opts.budget_clock), account)


def _limited(base: Any, budget: Any) -> Any:
    """A backend factory that hands the budget to AWS backends (``settings.extra["aws_limiter"]``)."""

    def factory(source: Any, settings: Any) -> Any:
        make = base or backend_factory(SOURCE_BACKENDS[source.kind])
        if budget is None:
            return make(source, settings)
        made: list[Any] = []  # calls through a wrapper show no client: they count in the drill's region
        limiter = budget.for_drill(lambda: made[0].region if made else getattr(source, "region", None))
        made.append(make(source, replace(settings, extra={**settings.extra, "aws_limiter": limiter})))
        return made[0]

    return factory


def _one(lr: LoadedRunbook, opts: FleetOptions, budget: Any, token: cancel.CancelToken) -> FleetRow:
    """One drill on this worker thread; never raises (a fleet goes on whatever one drill does)."""
    rb = lr.runbook
    if token.is_set():
        return FleetRow(lr.path, rb.name, NOT_RUN, 130, error=f"not started: {token.reason}")
    try:
        run = replace(
            opts.run,
            clock=cancel.CancellableClock(opts.run.clock),
            aws_session=opts.session_for(lr) if opts.session_for and _is_aws(lr) else opts.run.aws_session,
            backend_factory=_limited(opts.run.backend_factory, budget),
        )
        with cancel.watching(token):
            res = run_drill(lr, run)
    except DrillError as exc:  # refused before it started (key, evidence directory, bucket...)
        return FleetRow(lr.path, rb.name, "error", exc.exit_code, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug: this drill's row says so, the others go on
        log.exception("fleet_drill_crashed", runbook=rb.name)
        return FleetRow(lr.path, rb.name, "error", 3, error=f"InternalError: {type(exc).__name__}: {exc}")
    return FleetRow(lr.path, rb.name, res.verdict, res.exit_code, res.run_id, res.rto_seconds, res.evidence, res.error)


@contextmanager
def _signals_cancel(token: cancel.CancelToken) -> Iterator[None]:
    """In the main thread, SIGINT/SIGTERM cancel the fleet (every drill tears down); elsewhere nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if token.is_set():
            log.warning("signal_noted", signal=name, reason="the fleet is already stopping: drills are tearing down")
            return
        log.warning("fleet_interrupted", signal=name, reason="every running drill tears down; no new drill starts")
        token.cancel(f"fleet interrupted by {name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _default_key(runbooks: list[LoadedRunbook], opts: RunOptions) -> None:
    """Generate the user's default signing key once, here, rather than racing in every drill thread."""
    if opts.signing_key is not None or all(
        lr.runbook.evidence.signing_key or lr.runbook.evidence.kms_key_id for lr in runbooks
    ):
        return
    from drills.api import default_key_path
    from drills.evidence.keys import generate_keypair
    from drills.journal import secure_home

    path = default_key_path(opts.home)
    if not path.exists():
        secure_home(opts.home)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            generate_keypair(path)
        except OSError as exc:  # nothing has started yet
            raise PreflightError(
                f"cannot create the default signing key in {path.parent}: {exc.strerror or exc}",
                hint="set RESTORE_DRILLS_HOME to a directory you can write, or pass --key",
            ) from None
        log.warning("signing_key_generated", path=str(path), public_key=str(path.with_suffix(".pub")))


def run_fleet(
    runbooks: list[LoadedRunbook], opts: FleetOptions, token: cancel.CancelToken | None = None
) -> FleetResult:
    """Run ``runbooks`` with at most ``opts.parallel`` at once; rows in the order given.

    Nothing starts before the budget's account is known and the default key exists (an
    ``InputError`` then, exit 2). ``token``: cancel from outside (tests); the main thread's
    SIGINT/SIGTERM set it too.
    """
    if opts.parallel < 1:
        raise InputError(f"--parallel {opts.parallel}: must be at least 1")
    token = token or cancel.CancelToken()
    budget = _make_budget(opts, runbooks)
    from drills.journal import secure_home

    secure_home(opts.run.home)  # made here once: drill threads creating it at once would race
    _default_key(runbooks, opts.run)
    rows: list[FleetRow | None] = [None] * len(runbooks)
    with _signals_cancel(token), ThreadPoolExecutor(max_workers=opts.parallel, thread_name_prefix="drill") as pool:
        futures: dict[Future[FleetRow], int] = {
            pool.submit(_one, lr, opts, budget, token): i for i, lr in enumerate(runbooks)
        }
        pending = set(futures)
        while pending:  # a timeout, so the main thread runs its signal handler while drills run
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                rows[futures[f]] = f.result()
    return FleetResult([r for r in rows if r is not None], token.is_set(), budget)
