"""The one exception tree of restore-drills.

Errors from the layers below (botocore, psycopg, pymysql, subprocess, YAML)
are translated into these at the edge where they happen, so the machine and
the CLI only ever see ours. The CLI prints ``ErrorType: message`` and exits
with the class's ``exit_code``::

    DrillError                      exit 3  (anything unexpected is infrastructure)
    ├── InputError                  exit 2  bad input; nothing was started
    │   ├── RunbookError                    FILE:LINE: field.path: what is wrong
    │   └── PreflightError                  the environment cannot run the drill as declared (binaries, scratch space)
    ├── BackupDefect                exit 1  the backup itself is missing, unreadable, corrupt, gapped or does not
    │   │                                   hold the target: exactly what a drill exists to find (signed evidence)
    │   └── IncompleteRecovery              recovery ended before what the backup holds (proved after promotion)
    ├── InfrastructureError         exit 3  a backend could not restore, wait or tear down
    │   ├── TransientError                  worth retrying (throttling, connection refused while starting)
    │   ├── RestoreFailed                   terminal: the restore itself failed
    │   ├── DeadlineExceeded                a state ran past its deadline
    │   ├── IsolationError                  isolation could not be proven; the drill does not restore
    │   └── TeardownError                   something the run created could not be removed
    ├── ValidationError             exit 1  a validator could not run (query error, no connection)
    ├── EvidenceError               exit 3  evidence could not be written or signed
    │   └── VerificationError       exit 1  an envelope or payload failed verification
    └── Interrupted                 exit 130 Ctrl-C / SIGTERM; teardown and evidence still ran
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackupDefect",
    "DeadlineExceeded",
    "DrillError",
    "EvidenceError",
    "IncompleteRecovery",
    "InfrastructureError",
    "InputError",
    "Interrupted",
    "IsolationError",
    "PreflightError",
    "RestoreFailed",
    "RunbookError",
    "TeardownError",
    "TransientError",
    "ValidationError",
    "VerificationError",
]


class DrillError(Exception):
    """Base of every error this tool raises on purpose."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(DrillError):
    """The user asked for something that cannot work; nothing was started."""

    exit_code = 2


class RunbookError(InputError):
    """A runbook that does not load: carries file, line and the field path."""

    def __init__(self, file: str, line: int | None, field: str, problem: str, *, hint: str | None = None):
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem
        where = f"{file}:{line}" if line is not None else file
        loc = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(f"{loc}{problem}", hint=hint)


class PreflightError(InputError):
    """Preflight refused the drill (target outside the backup's range, missing binaries...)."""


class BackupDefect(DrillError):
    """The backup cannot give back what it should: the drill failed, and that is its finding.

    Exit 1 like any failed drill, never 2: a missing or corrupt backup is not a typo in the
    runbook, it is what a scheduled drill exists to discover, and it gets signed evidence.
    """

    exit_code = 1


class IncompleteRecovery(BackupDefect):
    """Recovery stopped before the target or before the last commit the archive holds."""


class InfrastructureError(DrillError):
    """A backend could not do its job."""


class TransientError(InfrastructureError):
    """A failure that is expected to pass: the retry policies retry these."""


class RestoreFailed(InfrastructureError):
    """The restore reached a terminal failure; retrying will not help."""


class DeadlineExceeded(InfrastructureError):
    """A state or the whole drill ran past its deadline."""


class IsolationError(InfrastructureError):
    """Isolation of the restore target could not be proven; ``facts`` are every check that decided it
    (``drills.backends.base.Fact``), for the evidence."""

    def __init__(self, message: str, *, hint: str | None = None, facts: tuple[Any, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.facts = facts


class TeardownError(InfrastructureError):
    """Some resource created by the run could not be removed or confirmed gone."""


class ValidationError(DrillError):
    """A validator could not run at all (as opposed to a check that failed)."""

    exit_code = 1


class EvidenceError(DrillError):
    """Evidence could not be written or signed."""


class VerificationError(EvidenceError):
    """An evidence envelope failed verification."""

    exit_code = 1


class Interrupted(DrillError):
    """The run was interrupted by a signal after teardown and evidence ran."""

    exit_code = 130
