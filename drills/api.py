"""The public API: run a drill from a loaded runbook, or finish one after a crash.

This is where the pieces meet: the runbook picks a backend (imported lazily),
the machine runs the states, the validators run through an injected callable,
and evidence is signed and written on every path.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import tempfile
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from drills import __version__
from drills.backends import SOURCE_BACKENDS, backend_factory, declaration_for_kind
from drills.backends.base import AnyBackend, BackendSettings
from drills.cleanup import SCRATCH_BACKEND, SCRATCH_KIND, Dispatch, finish_teardown
from drills.clock import Clock, SystemClock, iso
from drills.deliver import Outlets, deliver_run
from drills.errors import (
    DrillError,
    EvidenceError,
    InfrastructureError,
    PreflightError,
    TransientError,
    ValidationError,
)
from drills.journal import Journal, new_run_id, secure_home, state_home
from drills.machine import Drill, default_states, run_machine
from drills.measure import Measurement, TimelineEntry, measure, rpo_ms
from drills.progress import ProgressSink
from drills.reader import ReaderProvisioner
from drills.record import build_predicate, verdict_of
from drills.resources import Resource
from drills.runbook import LoadedRunbook
from drills.wait import OnPoll
from validators.base import ValidationReport
from validators.endpoint import Endpoint

__all__ = ["RunOptions", "RunResult", "default_key_path", "finish_teardown", "run_drill"]


log = structlog.get_logger("drills.api")


@dataclass(frozen=True)
class RunOptions:
    clock: Clock = field(default_factory=SystemClock)
    home: Path | None = None  # journal home; default state_home()
    signing_key: Path | None = None  # overrides runbook.evidence.signing_key
    evidence_dir: Path | None = None  # overrides runbook.evidence.dir
    trigger: str = "manual"
    keep_seconds: int | None = None
    aws_session: Any = None
    scratch_root: Path | None = None
    backend_factory: Any = None  # BackendFactory: embed a custom backend, or a fault-injecting one in tests
    outlets: Any = None  # drills.deliver.Outlets (metrics, notifications); None: from the environment
    progress: OnPoll | None = None  # told of each poll of a long wait; None: drills.progress on stderr
    run_id: str | None = None  # given by whoever restored (a Step Functions execution name); default: a new one
    # the restore ran elsewhere (Step Functions): when it was requested, and its timeline (restore, await_ready)
    # on this clock, so the RTO counts from the real request (drills.sfn_worker)
    restored_elsewhere: tuple[datetime, tuple[TimelineEntry, ...]] | None = None


@dataclass
class RunResult:
    run_id: str
    verdict: str
    exit_code: int
    evidence: Path | None
    rto_seconds: float | None
    rpo_seconds: float | None
    findings: list[dict[str, Any]]
    error: str | None
    failed_state: str | None
    drill: Drill
    evidence_storage: dict[str, Any] | None = None  # the S3 copy: status and what S3 reported (evidence.s3)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # metrics and notifications (drills.deliver)

    def to_json(self) -> dict[str, Any]:
        from drills.record import failure_reasons, latest_rpo_split

        m = self.drill.measurement
        split = latest_rpo_split(self.drill) or {}
        return {
            "run_id": self.run_id,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "rto_seconds": self.rto_seconds,
            "rto_objective_seconds": self.drill.loaded.runbook.objectives.rto_seconds,
            "rto_phases_ms": m.rto_phases_ms if m else {},
            "rpo_seconds": self.rpo_seconds,
            "rpo_objective_seconds": self.drill.loaded.runbook.objectives.rpo_seconds,
            "rto_met": bool(m and m.rto_met),
            "rpo_met": m.rpo_met if m else None,
            "reasons": failure_reasons(self.drill),
            **{k.replace("_ms", "_seconds"): (v / 1000 if v is not None else None) for k, v in split.items()},
            "evidence": str(self.evidence) if self.evidence else None,
            "evidence_storage": self.evidence_storage,
            "findings": self.findings,
            "rto_regression": self.drill.regression,
            "error": self.error,
            "failed_state": self.failed_state,
            "deliveries": self.deliveries,
        }


def default_key_path(home: Path | None = None) -> Path:
    return (home or state_home()) / "keys" / "drill.key"


def _signer(loaded: LoadedRunbook, opts: RunOptions) -> Any:
    """The evidence signer, built before anything starts: a bad key fails the run up front.

    ``--key`` beats the runbook; the runbook's Ed25519 key or AWS KMS key; else the user's
    default key, generated on first use.
    """
    from drills.evidence.keys import generate_keypair, load_signer

    ev = loaded.runbook.evidence
    if opts.signing_key is None and ev.kms_key_id is not None:
        from drills.aws.kms import KmsSigner

        return KmsSigner(ev.kms_key_id, opts.aws_session, clock=opts.clock)
    key = opts.signing_key or ev.signing_key
    path = key or default_key_path(opts.home)
    if key is None and not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the state home is unusable: nothing has started yet
            raise PreflightError(
                f"cannot create the default signing key in {path.parent}: {exc.strerror or exc}",
                hint="set RESTORE_DRILLS_HOME to a directory you can write, or pass --key",
            ) from None
        keyid = generate_keypair(path)
        log.warning("signing_key_generated", path=str(path), public_key=str(path.with_suffix(".pub")), keyid=keyid)
    return load_signer(path)


def scratch_root_for(runbook_dir: Path | None, option: Path | None) -> Path:
    """``--scratch``, else the runbook's ``scratch_dir`` (a big database knows its disk), else the machine-wide
    ``RESTORE_DRILLS_SCRATCH``, else the temp directory."""
    env = os.environ.get("RESTORE_DRILLS_SCRATCH")
    root = (option or runbook_dir or (Path(env) if env else None) or Path(tempfile.gettempdir())).absolute()
    if not root.is_dir():
        raise PreflightError(
            f"scratch directory {root} does not exist", hint="create it, or choose another with --scratch"
        )
    return root


def _probe_writable(directory: Path, what: str) -> None:
    """Write and remove a file, so a run that could never leave evidence does not start."""
    probe = directory / f".probe-{os.getpid()}-{threading.get_ident()}"  # fleet drills share a process
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(
            f"{what} {directory} is not writable: {exc.strerror}", hint="fix its permissions or choose another"
        ) from None


def _validate(d: Drill) -> ValidationReport:
    from validators.baseline import load_baseline
    from validators.errors import ValidatorError
    from validators.runner import run_validators

    assert d.endpoint is not None
    cfg = d.loaded.runbook.validators
    baseline_path = cfg.baseline or (cfg.schema_.baseline if cfg.schema_ else None)
    src = d.loaded.runbook.source
    target = getattr(src, "target_time", None)
    params = {"target_time": target if isinstance(target, datetime) else d.restore_requested_at}
    endpoint = d.endpoint
    if d.deadline_ns is not None:  # no single query may outlive the drill's deadline
        left_ms = max(1000, (d.deadline_ns - d.clock.monotonic_ns()) // 1_000_000)
        endpoint = replace(endpoint, options={**endpoint.options, "statement_timeout_ms": str(left_ms)})
    try:
        baseline = load_baseline(baseline_path) if baseline_path else None
        return run_validators(endpoint, cfg, params=params, baseline=baseline)
    except ValidatorError as exc:
        raise ValidationError(str(exc)) from None


_AUTH_FAILED = re.compile(r"password authentication failed|Access denied for user|\(1045,", re.IGNORECASE)


def _probe(ep: Endpoint) -> str:
    """The connect state's check: a refused connection is retried, refused credentials are not."""
    from validators.connect import probe
    from validators.errors import ValidatorError

    try:
        return probe(ep)
    except ValidatorError as exc:
        if _AUTH_FAILED.search(str(exc)):  # retrying a wrong password only delays the verdict
            raise InfrastructureError(str(exc), hint="the restored database refused the credentials") from None
        raise TransientError(str(exc)) from None


def _measure(d: Drill) -> Measurement:
    rb = d.loaded.runbook
    src = rb.source
    newest = None
    if d.validation and d.validation.newest_commit_at:
        newest = datetime.fromisoformat(d.validation.newest_commit_at.replace("Z", "+00:00"))
    target = getattr(src, "target_time", None)
    if declaration_for_kind(src.kind).rpo_reference(src) == "backup-created":  # the backend says where from
        created = (d.preflight.recovery_point.get("created_at") if d.preflight else None) or None
        ref = datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
        method, achieved = "dump", rpo_ms(d.restore_requested_at, ref)
    elif isinstance(target, datetime):
        method, achieved = "target", rpo_ms(target, newest)
    else:
        method, achieved = "request", rpo_ms(d.restore_requested_at, newest)
    if newest is None and method != "dump":
        method = "none"
    validated = d.validation is not None and d.validation.passed
    return measure(
        d.timeline,
        validated=validated,
        rto_objective_s=rb.objectives.rto_seconds,
        rpo_objective_s=rb.objectives.rpo_seconds,
        achieved_rpo=achieved,
        rpo_method=method,
    )


def _executor() -> dict[str, Any]:
    return {"tool": "restore-drills", "version": __version__}


def _evidence_store(loaded: LoadedRunbook, opts: RunOptions) -> Any:
    """The runbook's S3 evidence store (``evidence.s3``), or None."""
    cfg = loaded.runbook.evidence.s3
    if cfg is None:
        return None
    from drills.aws.clients import aws_client
    from drills.evidence.s3 import S3Store

    client = aws_client("s3", session=opts.aws_session, clock=opts.clock)  # every call through AwsCaller
    return S3Store(cfg.bucket, cfg.prefix, cfg.retention_days, cfg.kms_key_id, client=client)


def _store_copy(drill: Drill, store: Any, path: Path, stored: list[dict[str, Any]]) -> None:
    """Put the written envelope on S3 under lock; a failure keeps the local copy and is reported, never raised."""
    doc = store.push(path, drill.loaded.runbook.name, drill.run_id)  # retention counts on S3's clock, not ours
    stored.append(doc)
    event = "evidence_stored" if doc["status"] in ("stored", "already-stored") else "evidence_not_stored"
    drill.journal.append(event, status=doc["status"], error=doc["error"], key=doc["facts"].get("key"))
    if event == "evidence_not_stored":
        log.warning(event, run_id=drill.run_id, status=doc["status"], error=doc["error"], hint="drill evidence push")


def _finish(
    drill: Drill,
    opts: RunOptions,
    signer: Any,
    written: list[Path],
    more_secrets: list[str],
    *,
    store: Any = None,
    stored: list[dict[str, Any]] | None = None,
    trusted: list[Any],  # whose records count as history (drills.history.trusted_verifiers)
    restore_wait: dict[str, Any] | None = None,  # how the restore's wait was paced (_restore_pacing)
) -> None:
    """Sign and write the evidence; a failure here is recorded, never raised past teardown."""
    from drills.evidence.statement import subject_for_bytes
    from drills.history import append_drill, regression

    rb, loaded, journal = drill.loaded.runbook, drill.loaded, drill.journal
    out_dir = opts.evidence_dir or rb.evidence.dir
    predicate = build_predicate(
        drill, executor=_executor(), trigger=opts.trigger, host=socket.gethostname(), initiated_by=getpass.getuser()
    )
    m = drill.measurement

    def complete(past: list[Any], trail: dict[str, Any]) -> dict[str, Any]:  # under the chain lock
        predicate["drill"]["finished_at"] = iso(drill.clock.now())  # dated in chain order, after any wait
        drill.regression = regression(past, m.achieved_rto_ms if m else None, predicate)
        extra: dict[str, Any] = {"regression": drill.regression}
        if restore_wait is not None:
            extra["restore_wait"] = restore_wait
        if store is not None and past:  # S3 attests the previous record's lock now; this record signs what it said
            extra["previous_drill_storage"] = store.storage_facts(rb.name, past[-1].run_id)
        return predicate | trail | extra

    secrets = [drill.endpoint.password.reveal()] if drill.endpoint and drill.endpoint.password else []
    secrets += more_secrets  # the admin password the validators' role was created with
    try:
        path = append_drill(
            out_dir,
            rb.name,
            trusted,
            signer,
            complete,
            run_id=drill.run_id,
            subjects=[subject_for_bytes(f"runbook:{rb.name}", loaded.path.read_bytes())],
            secrets=secrets,
        )
    except (EvidenceError, OSError) as exc:
        journal.append("evidence_failed", error=str(exc))
        log.error("evidence_failed", error=str(exc))
        if drill.error is None:
            drill.error = exc if isinstance(exc, DrillError) else EvidenceError(str(exc))
            drill.failed_state = "evidence"
        return
    written.append(path)
    journal.append("evidence_written", path=str(path))
    if store is not None:
        _store_copy(drill, store, path, stored if stored is not None else [])


def _restore_pacing(backend_name: str, out_dir: Path, runbook: str, trusted: list[Any]) -> tuple[Any, Any]:
    """The poll policy for an AWS restore's wait, from this runbook's trusted history, and its evidence entry.

    Fewer than three past drills with both marks: the plain policy, exactly as without history.
    Other backends wait for local processes: (None, None).
    """
    from drills.evidence.chain import scan
    from drills.forecast_poll import READY_MARKS, ForecastPollPolicy, describe, forecast, wait_durations
    from drills.wait import PollPolicy

    ready = READY_MARKS.get(backend_name)
    if ready is None:
        return None, None
    records = scan(out_dir, trusted, runbook=runbook).of(runbook)  # this runbook's chain only
    durations = wait_durations((r.predicate for r in records), ready)
    expected = forecast(durations)
    policy = ForecastPollPolicy(forecast=expected) if expected is not None else None
    return policy, describe(policy or PollPolicy(), len(durations))


def run_drill(loaded: LoadedRunbook, options: RunOptions | None = None) -> RunResult:
    """Run one drill end to end. Never raises for a drill failure: the result says."""
    opts = options or RunOptions()
    clock = opts.clock
    rb = loaded.runbook
    secure_home(opts.home)  # checked and made 0700 before anything (a default key) is written into it
    signer = _signer(loaded, opts)
    from drills.history import trusted_verifiers

    trusted = trusted_verifiers(signer, rb.evidence.trusted_keys)  # whose earlier records count as history
    out_dir = (opts.evidence_dir or rb.evidence.dir).absolute()
    _probe_writable(out_dir, "evidence directory")
    store = _evidence_store(loaded, opts)
    if store is not None:
        store.check_bucket()  # a bucket that cannot lock records is refused before anything starts
    outlets = opts.outlets or Outlets.from_env()
    outlets.preflight()
    from drills.aborted import record_crashes_of

    # a killed earlier run of this runbook gets its signed `aborted` record before this one's
    record_crashes_of(rb.name, out_dir=out_dir, signer=signer, trusted=trusted, clock=clock, home=opts.home)
    run_id = opts.run_id or new_run_id(clock.now())
    with structlog.contextvars.bound_contextvars(run_id=run_id):  # every log line of the run names it; unbound after
        return _run(loaded, opts, run_id, signer=signer, store=store, outlets=outlets, trusted=trusted, out_dir=out_dir)


def _run(
    loaded: LoadedRunbook,
    opts: RunOptions,
    run_id: str,
    *,
    signer: Any,
    store: Any,
    outlets: Any,
    trusted: list[Any],
    out_dir: Path,
) -> RunResult:
    """One run with its id bound to every log line (see :func:`run_drill`)."""
    clock = opts.clock
    rb = loaded.runbook
    journal = Journal.create(run_id, clock, opts.home)
    source_dump = rb.source.model_dump(mode="json")
    journal.append(
        "run_started",
        pid=os.getpid(),
        runbook={"name": rb.name, "path": str(loaded.path), "sha256": loaded.sha256},
        source=source_dump,
        tool_version=__version__,
        evidence={  # where `drill teardown` writes this run's `aborted` record if it is killed
            "dir": str(out_dir),
            "signing_key": str(Path(signer.source).absolute()) if getattr(signer, "source", None) else None,
            "kms_key_id": getattr(signer, "key_id", None),
            "trusted_keys": str(rb.evidence.trusted_keys) if rb.evidence.trusted_keys else None,
        },
    )
    scratch_root = scratch_root_for(rb.scratch_dir, opts.scratch_root)
    scratch = scratch_root / f"restore-drill-{run_id}"
    backend_name = SOURCE_BACKENDS[rb.source.kind]
    restore_poll, restore_wait = _restore_pacing(backend_name, out_dir, rb.name, trusted)
    if restore_wait is not None:
        journal.append("restore_pacing", **restore_wait)
    settings = BackendSettings(
        run_id=run_id,
        run_dir=scratch,
        clock=clock,
        runbook_name=rb.name,
        keep_seconds=opts.keep_seconds,
        aws_session=opts.aws_session,
        restore_poll=restore_poll,
        on_poll=opts.progress if opts.progress is not None else ProgressSink(),
        # resources outlive a crashed runner by the drill deadline plus teardown's hour; the sweeper takes them then
        extra={"ttl_seconds": rb.effective_deadline_seconds + 3600},
    )
    factory = opts.backend_factory or backend_factory(backend_name)
    backend: AnyBackend = factory(rb.source, settings)
    provisioner = ReaderProvisioner()
    d = Drill(
        loaded=loaded,
        backend=backend,
        clock=clock,
        journal=journal,
        run_validators=_validate,
        probe=_probe,
        measure=_measure,
        keep=opts.keep_seconds is not None,
        keep_seconds=opts.keep_seconds,
        provision_reader=provisioner,
    )
    if opts.restored_elsewhere is not None:  # the RTO and the drill's deadline start at that request
        d.restore_requested_at, earlier = opts.restored_elsewhere
        d.timeline.extend(earlier)
        d.deadline_ns = min((e.start_ns for e in earlier), default=clock.monotonic_ns()) + int(
            rb.effective_deadline_seconds * 1e9
        )
    d.register(Resource(kind=SCRATCH_KIND, id=str(scratch), backend=SCRATCH_BACKEND, attrs={}))
    scratch.mkdir(parents=True, exist_ok=False)
    scratch.chmod(0o755)  # the server's unprivileged user must traverse it; what is inside is private
    evidence_path: list[Path] = []
    stored: list[dict[str, Any]] = []
    dispatch = Dispatch(backend, settings, {backend_name: rb.source})
    run_machine(
        d,
        default_states(loaded),
        lambda drill: _finish(
            drill,
            opts,
            signer,
            evidence_path,
            provisioner.secrets(),
            store=store,
            stored=stored,
            trusted=trusted,
            restore_wait=restore_wait,
        ),
        dispatch,
    )
    verdict = verdict_of(d)
    exit_code = _exit_code(d, verdict)
    deliveries = deliver_run(  # metrics and notifications: never raises, never changes the verdict
        d, verdict=verdict, evidence=evidence_path[0] if evidence_path else None,
        evidence_dir=opts.evidence_dir or rb.evidence.dir, outlets=outlets, session=opts.aws_session,
        trusted=trusted,
    )  # fmt: skip
    journal.append("run_finished", verdict=verdict, exit_code=exit_code, interrupted=d.interrupted)
    journal.close()
    m = d.measurement
    return RunResult(
        run_id=run_id,
        verdict=verdict,
        exit_code=exit_code,
        evidence=evidence_path[0] if evidence_path else None,
        rto_seconds=m.achieved_rto_ms / 1000 if m and m.achieved_rto_ms is not None else None,
        rpo_seconds=m.achieved_rpo_ms / 1000 if m and m.achieved_rpo_ms is not None else None,
        findings=[f.to_dict() for f in d.validation.findings] if d.validation else [],
        error=f"{type(d.error).__name__}: {d.error}" if d.error else None,
        failed_state=d.failed_state,
        drill=d,
        evidence_storage=stored[0] if stored else None,
        deliveries=deliveries,
    )


def _exit_code(d: Drill, verdict: str) -> int:
    if d.interrupted:
        return 130
    if d.teardown_errors:
        return 3
    if d.error is not None:
        return d.error.exit_code
    return 0 if verdict == "passed" else 1
