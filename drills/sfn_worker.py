"""``drill sfn-worker``: the worker that runs this project's own code for an exported state machine.

The machine of ``drill export-asl`` (:mod:`drills.asl`) restores, waits and deletes with
``aws-sdk:rds`` tasks and hands three phases to a worker, each as an SQS message with a task
token (``sqs:sendMessage.waitForTaskToken``). The worker long-polls the queue and, per message:

* ``preflight``: :class:`~drills.aws.rds.RdsBackend`'s read-only checks (recovery point, KMS,
  route tables and security groups, the instance identifier free);
* ``validate``: the ordinary drill (:func:`drills.api.run_drill`) on the instance the execution
  restored (:class:`~drills.aws.adopted.AdoptedRdsBackend`): isolation facts, validators,
  measurement, teardown and signed evidence. The RTO counts from the execution's own restore
  request (its history), not from when the worker got the message;
* ``evidence``: after the machine's teardown. If the validate phase wrote the run's record, the
  worker confirms the instance is gone; if the drill never reached validation (a failed restore,
  a terminal status, the deadline), it writes the signed failed record, with teardown.

Each answer is ``SendTaskSuccess`` with a JSON output, or ``SendTaskFailure`` (a failed drill,
a refused preflight, a stopped worker) whose error and cause hold no secret, so the execution goes
through its ``Catch`` to teardown. While working, the worker sends ``SendTaskHeartbeat`` and keeps
the message invisible; it deletes the message only after answering. SIGTERM (ECS stopping the
task) interrupts the work in hand (the drill machine tears down and writes evidence first), answers
``WorkerStopped`` and ends the loop.

The message parsing, the answers and the timeline read from the execution history are pure.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlparse

import structlog

from drills.asl import TEARDOWN_SECONDS, instance_id_for
from drills.clock import Clock, SystemClock, iso
from drills.errors import DrillError, InputError, Interrupted
from drills.measure import TimelineEntry
from drills.scrub import scrub

__all__ = [
    "PHASES",
    "Answer",
    "Task",
    "Worker",
    "answer_for_exit",
    "parse_task",
    "recorded_by_validate",
    "restored_timeline",
    "runbook_path",
]

log = structlog.get_logger("drills.sfn_worker")

PHASES = ("preflight", "validate", "evidence")
MAX_ERROR, MAX_CAUSE = 256, 32768  # what SendTaskFailure accepts
_ERRORS = {1: "DrillFailed", 2: "PreflightError", 3: "InfrastructureError", 130: "WorkerStopped"}


@dataclass(frozen=True)
class Task:
    """One message of the machine: which phase of which run, and the token to answer with."""

    phase: str
    runbook: str
    run_id: str
    execution_arn: str
    instance_id: str
    token: str = field(repr=False)  # whoever holds it can answer for the execution: never logged
    heartbeat_seconds: int | None = None
    error: dict[str, Any] = field(default_factory=dict)  # evidence phase: why the drill failed earlier, if it did
    state_prefix: str = ""  # a fleet's iteration: its states are "<runbook>.Restore", ...


@dataclass(frozen=True)
class Answer:
    ok: bool
    output: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    cause: str = ""

    @classmethod
    def failure(cls, error: str, cause: str, secrets: Sequence[str] = ()) -> Answer:
        """A failure whose cause is scrubbed (connection strings, the given secrets) and fits the API."""
        text = scrub(cause)
        for s in secrets:
            if s:
                text = text.replace(s, "********")
        return cls(False, {}, error[:MAX_ERROR], text[:MAX_CAUSE])


def parse_task(body: str) -> Task:
    """The message the machine sent; InputError naming what is wrong (never the token)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InputError(f"task message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError("task message is not a JSON object")
    for key in ("phase", "runbook", "run_id", "execution_arn", "instance_id", "task_token"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InputError(f"task message: field {key!r} missing or not a string", hint="re-export with export-asl")
    if doc["phase"] not in PHASES:
        raise InputError(f"task message: phase {doc['phase']!r} is not one of {', '.join(PHASES)}")
    beat = doc.get("heartbeat_seconds")
    if beat is not None and (not isinstance(beat, int) or isinstance(beat, bool) or beat <= 0):
        raise InputError(f"task message: heartbeat_seconds {beat!r} is not a positive integer")
    error = doc.get("error") or {}
    return Task(
        phase=doc["phase"],
        runbook=doc["runbook"],
        run_id=doc["run_id"],
        execution_arn=doc["execution_arn"],
        instance_id=doc["instance_id"],
        token=doc["task_token"],
        heartbeat_seconds=beat,
        error=error if isinstance(error, dict) else {"Error": str(error)},
        state_prefix=str(doc.get("state_prefix") or ""),
    )


def runbook_path(uri: str, roots: Sequence[Path]) -> Path:
    """The runbook a message names, only if it lies inside one of the worker's runbook roots."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise InputError(
            f"runbook {uri!r}: the worker reads runbooks from its own disk (a path or file:// URI)",
            hint="ship the runbooks with the worker (image or volume) and export with --runbook-uri PATH",
        )
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).resolve()
    for root in roots:
        if path.is_relative_to(root.resolve()):
            return path
    raise InputError(
        f"runbook {path} is outside the worker's runbook roots ({', '.join(str(r) for r in roots)})",
        hint="start the worker with --runbook-root DIR for the directory that holds it",
    )


def answer_for_exit(result: dict[str, Any], phase: str) -> Answer:
    """A finished drill run as the machine's answer: success only for exit 0."""
    code = int(result.get("exit_code", 3))
    if code == 0:
        return Answer(True, result)
    reasons = "; ".join(str(r) for r in result.get("reasons") or []) or str(result.get("error") or "")
    where = f"; evidence {result['evidence']}" if result.get("evidence") else ""
    return Answer.failure(_ERRORS.get(code, "DrillFailed"), f"{phase}: exit {code}: {reasons}{where}")


def recorded_by_validate(error: dict[str, Any]) -> bool:
    """Whether the validate phase ran the drill to its record, from what the evidence message carries.

    The machine reaches ``Evidence`` without an error only when validation answered success, and a
    worker's failure answer for a finished run names its evidence (``...; evidence PATH``). Any other
    error (a failed restore, the deadline, a worker that died: ``States.HeartbeatTimeout``) means no
    record exists yet. Workers may be many and the validate phase may have run on another one.
    """
    return not error or "; evidence " in str(error.get("Cause") or "")


def _entered(events: Sequence[dict[str, Any]], name: str) -> datetime | None:
    for e in events:
        if (e.get("stateEnteredEventDetails") or {}).get("name") == name:
            at = e.get("timestamp")
            return at if isinstance(at, datetime) else None
    return None


def restored_timeline(
    events: Sequence[dict[str, Any]], prefix: str, now: datetime, now_ns: int
) -> tuple[datetime, tuple[TimelineEntry, ...]]:
    """What the execution did before the worker got the drill: ``restore`` (request to available) and
    ``await_ready`` (isolation enforced and applied), from its history, on the worker's monotonic clock.

    The RTO then runs from the real restore request; a history without those states is an error,
    never an RTO that starts at the worker.
    """
    t = {k: _entered(events, prefix + k) for k in ("Restore", "Isolate", "Validate")}
    missing = [k for k, v in t.items() if v is None]
    if missing:
        raise InputError(f"the execution history has no {', '.join(prefix + m for m in missing)} state")
    restore, isolate, validate = t["Restore"], t["Isolate"], t["Validate"]
    assert restore is not None and isolate is not None and validate is not None

    def mono(at: datetime) -> int:
        return now_ns - int((now - at).total_seconds() * 1e9)

    entries = (
        TimelineEntry("restore", 1, iso(restore), iso(isolate), mono(restore), mono(isolate), "ok"),
        TimelineEntry("await_ready", 1, iso(isolate), iso(validate), mono(isolate), mono(validate), "ok"),
    )
    return restore, entries


# ---------------------------------------------------------------------------------------------- I/O


class _Heartbeat:
    """While a task runs: SendTaskHeartbeat, and the message kept invisible to other workers."""

    def __init__(self, worker: Worker, task: Task, receipt: str) -> None:
        beat = task.heartbeat_seconds or 300
        self.interval = max(1.0, min(60.0, beat / 5))
        self.worker, self.task, self.receipt = worker, task, receipt
        self.done = threading.Event()
        self.beats = 0
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{task.run_id}", daemon=True)

    def _run(self) -> None:
        while not self.done.wait(self.interval):  # a timer, not a wait for a condition
            try:
                self.worker.sfn.send_task_heartbeat(taskToken=self.task.token)
                self.worker.sqs.change_message_visibility(
                    QueueUrl=self.worker.queue_url,
                    ReceiptHandle=self.receipt,
                    VisibilityTimeout=int(self.interval * 3) + 60,
                )
                self.beats += 1
            except Exception as exc:  # a missed beat is logged; the machine decides when it is too many
                log.warning("sfn_worker.heartbeat_failed", run_id=self.task.run_id, error=str(exc)[:200])

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(10)


@dataclass
class Worker:
    """Takes the machine's messages from ``queue_url`` and answers them (see the module docstring)."""

    session: Any
    queue_url: str
    runbook_roots: Sequence[Path]
    wait_seconds: int = 20
    signing_key: Path | None = None
    home: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    stop: threading.Event = field(default_factory=threading.Event)
    handled: list[tuple[str, bool]] = field(default_factory=list)  # (phase, answered ok) per message
    dropped: list[str] = field(default_factory=list)  # phases of messages whose task was no longer awaited
    _interruptible: bool = False

    def __post_init__(self) -> None:
        self.sqs = self.session.client("sqs")
        self.sfn = self.session.client("stepfunctions")

    # -- the loop
    def serve(self, *, once: bool = False) -> int:
        """Until stopped (SIGTERM, ``stop``), or after one message (or one empty wait) with ``once``."""
        with self._signals():
            while not self.stop.is_set():
                try:
                    with self._may_interrupt():
                        got = self.sqs.receive_message(
                            QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=self.wait_seconds
                        ).get("Messages", [])
                except Interrupted:
                    break
                for message in got:
                    self.handle(message)
                if once:
                    break
        return 0

    def handle(self, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        try:
            task = parse_task(message.get("Body", ""))
        except InputError as exc:  # nobody can answer it: drop it rather than see it every visibility timeout
            log.error("sfn_worker.bad_message", error=str(exc), message_id=message.get("MessageId"))
            self._delete(receipt)
            return
        if not self._still_awaited(task):  # a message delivered again after its answer: never drill twice
            self.dropped.append(task.phase)
            self._delete(receipt)
            return
        log.info("sfn_worker.task", phase=task.phase, run_id=task.run_id, instance=task.instance_id)
        stopped = Answer.failure("WorkerStopped", f"worker stopped before finishing the {task.phase} task")
        try:
            with _Heartbeat(self, task, receipt), self._may_interrupt():
                answer = stopped if self.stop.is_set() else self.work(task)  # a SIGTERM since the receive
        except Interrupted:
            answer = stopped
        if answer.error == "WorkerStopped":
            self.stop.set()
        self._answer(task, answer)
        self._delete(receipt)  # only once answered
        self.handled.append((task.phase, answer.ok))

    def _still_awaited(self, task: Task) -> bool:
        """A first heartbeat: SQS delivers at least once, and a task answered or timed out is nobody's.

        An unknown token is asked about again for a few seconds: the message can arrive before the
        execution has registered its token (moto does that).
        """
        from drills.aws.calls import error_code
        from drills.wait import every, until

        codes: list[str | None] = []

        def alive() -> bool:
            try:
                self.sfn.send_task_heartbeat(taskToken=task.token)
            except Exception as exc:
                if error_code(exc) not in ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken"):
                    raise
                codes.append(error_code(exc))
                return False
            return True

        answered = until(SystemClock(), 5.0, lambda: alive() or codes[-1] == "TaskTimedOut", "token", policy=every(0.5))
        if answered and (not codes or codes[-1] != "TaskTimedOut"):
            return True
        log.warning("sfn_worker.stale_task", phase=task.phase, run_id=task.run_id, code=codes[-1] if codes else None)
        return False

    def _delete(self, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except Exception as exc:  # it comes back after the visibility timeout; _still_awaited then drops it
            log.error("sfn_worker.delete_failed", error=str(exc)[:300])

    def _answer(self, task: Task, answer: Answer) -> None:
        try:
            if answer.ok:
                self.sfn.send_task_success(taskToken=task.token, output=json.dumps(answer.output, default=str))
            else:
                self.sfn.send_task_failure(taskToken=task.token, error=answer.error, cause=answer.cause)
        except Exception as exc:  # the task timed out or the execution ended: nobody waits for this answer
            log.error("sfn_worker.answer_failed", run_id=task.run_id, phase=task.phase, error=str(exc)[:300])
        log.info("sfn_worker.answered", run_id=task.run_id, phase=task.phase, ok=answer.ok, error=answer.error or None)

    # -- one task
    def work(self, task: Task) -> Answer:
        """The phase's work; every drill error becomes a failure answer (a bug is one too, without a traceback)."""
        from drills.aws.rds_declaration import RdsPitrSource, RdsSnapshotSource
        from drills.runbook import load_runbook

        try:
            loaded = load_runbook(runbook_path(task.runbook, self.runbook_roots))
            src = loaded.runbook.source
            if not isinstance(src, RdsSnapshotSource | RdsPitrSource):
                raise InputError(f"{loaded.path}: source.kind {src.kind}: the worker runs rds-snapshot and rds-pitr")
            expected = instance_id_for(loaded.runbook.name, task.run_id)
            if task.instance_id != expected:
                raise InputError(
                    f"the message names instance {task.instance_id}, run {task.run_id} restores {expected}"
                )
            phase = {"preflight": self._preflight, "validate": self._validate, "evidence": self._evidence}[task.phase]
            return phase(task, loaded)
        except Interrupted:
            raise
        except DrillError as exc:
            return Answer.failure(type(exc).__name__, f"{task.phase}: {exc}")
        except Exception as exc:  # the execution must hear of it, or it waits for the heartbeat
            log.exception("sfn_worker.bug", phase=task.phase, run_id=task.run_id)
            return Answer.failure("InternalError", f"{task.phase}: {type(exc).__name__}: {exc}")

    def _settings(self, task: Task, loaded: Any) -> Any:
        import tempfile

        from drills.backends.base import BackendSettings

        return BackendSettings(
            run_id=task.run_id,
            run_dir=Path(tempfile.gettempdir()) / f"restore-drill-{task.run_id}",
            clock=self.clock,
            runbook_name=loaded.runbook.name,
            aws_session=self.session,
        )

    def _preflight(self, task: Task, loaded: Any) -> Answer:
        from drills.aws.calls import TAG_CREATED, TAG_EXPIRES, drill_tags
        from drills.aws.rds import RdsBackend
        from drills.backends.base import StepContext
        from drills.wait import deadline_in

        backend = RdsBackend(loaded.runbook.source, self._settings(task, loaded))
        backend.base_id = backend.instance_id = task.instance_id  # the machine restores into it: must be free

        def nothing_is_created_here(resource: Any) -> None:
            raise InputError(f"preflight tried to register {resource.kind} {resource.id}")

        ctx = StepContext(self.clock, deadline_in(self.clock, 900), log, nothing_is_created_here)
        report = backend.preflight(ctx)
        facts = report.facts.get("isolation", [])
        ttl = timedelta(seconds=loaded.runbook.effective_deadline_seconds + TEARDOWN_SECONDS)
        tags = {t["Key"]: t["Value"] for t in drill_tags(task.run_id, loaded.runbook.name, self.clock.now(), ttl)}
        return Answer(
            True,
            {
                "exit_code": 0,
                "created_at": tags[TAG_CREATED],  # the restore's tags (the machine cannot compute dates)
                "expires_at": tags[TAG_EXPIRES],
                "source": report.source.get("identifier"),
                "recovery_point": report.recovery_point.get("kind"),
                "isolation_checks": len(facts),
                "isolation_passed": all(f.get("passed") for f in facts),
            },
        )

    def _run(self, task: Task, loaded: Any, **options: Any) -> dict[str, Any]:
        from drills.api import RunOptions, run_drill

        opts = RunOptions(
            clock=self.clock,
            home=self.home,
            signing_key=self.signing_key,
            trigger="step-functions",
            aws_session=self.session,
            run_id=task.run_id,
            **options,
        )
        res = run_drill(loaded, opts).to_json()
        keep = ("run_id", "verdict", "exit_code", "reasons", "rto_seconds", "rto_met", "rpo_seconds", "rpo_met")
        return {k: res.get(k) for k in keep} | {"evidence": res.get("evidence"), "error": res.get("error")}

    def _validate(self, task: Task, loaded: Any) -> Answer:
        from drills.aws.adopted import AdoptedRdsBackend

        history = self._history(task.execution_arn)
        restored = restored_timeline(history, task.state_prefix, self.clock.now(), self.clock.monotonic_ns())
        result = self._run(
            task,
            loaded,
            backend_factory=lambda source, settings: AdoptedRdsBackend(source, settings, task.instance_id),
            restored_elsewhere=restored,
        )
        return answer_for_exit(result, "validate")

    def _evidence(self, task: Task, loaded: Any) -> Answer:
        from drills.aws.adopted import AdoptedRdsBackend
        from drills.evidence.store import evidence_path

        written = evidence_path(loaded.runbook.evidence.dir, task.run_id)
        if written.exists() or recorded_by_validate(task.error):  # that run tore down and signed its record
            if not self._instance_gone(task.instance_id, loaded.runbook.source.region):
                return Answer.failure("TeardownError", f"{task.instance_id} still exists: run `drill sweep`")
            where = str(written) if written.exists() else "written by the worker of the validate phase"
            return Answer(True, {"exit_code": 0, "evidence": where, "instance_gone": True})
        why = task.error.get("Error") or "the drill stopped before validation"
        cause = f"{why}: {task.error.get('Cause')}" if task.error.get("Cause") else str(why)
        result = self._run(
            task,
            loaded,
            backend_factory=lambda source, settings: AdoptedRdsBackend(
                source, settings, task.instance_id, failure=scrub(cause)[:2000]
            ),
        )
        if not result.get("evidence"):
            return answer_for_exit(result | {"exit_code": result.get("exit_code") or 3}, "evidence")
        return Answer(True, result)  # a failed drill, recorded: the machine's Verdict fails the execution

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events += page.get("events", [])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def _instance_gone(self, instance_id: str, region: str | None) -> bool:
        from drills.aws.calls import is_not_found

        try:
            self.session.client("rds", region_name=region).describe_db_instances(DBInstanceIdentifier=instance_id)
        except Exception as exc:
            if is_not_found(exc):
                return True
            raise
        return False

    # -- signals
    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the loop; during work or a receive they interrupt it (see the module docstring)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()
            log.warning("sfn_worker.stopping", signal=signal.Signals(signum).name)
            if self._interruptible:
                raise Interrupted(f"worker stopped by {signal.Signals(signum).name}")

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextmanager
    def _may_interrupt(self) -> Iterator[None]:
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
