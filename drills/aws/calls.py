"""Shared AWS plumbing for the RDS and Aurora backends and the sweeper.

Two things live here because every AWS code path needs them the same way:

* **Calling** (:class:`AwsCaller`): one retry policy for every API call, on the
  injected clock. botocore's own retries are switched off (:func:`client_config`)
  so that throttling is retried by tenacity with ``sleep=clock.sleep``: tests
  of a throttled drill then take milliseconds, and the deadline of the current
  state bounds every retry.
* **Waiting** is :func:`drills.wait.poll`, the one wait primitive of the code, with its
  default policy: the interval grows with the time already waited (20 % of it, 10 s to
  150 s), so a 2-hour restore costs about 65 describe calls while the "available" time
  is still known to within half an interval (the midpoint of the last two polls).
* **Owning** (tags, identifiers; deletion in :mod:`drills.aws.deleter`): every resource a drill
  creates has the ``drill-`` prefix and the run's tags; deletion refuses
  anything else, so neither teardown nor the sweeper can remove a database the
  tool did not create.

boto3 is never imported here at module level: the CLI imports backends lazily
and must start fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from drills.clock import Clock, iso
from drills.errors import DrillError, InfrastructureError, PreflightError, RestoreFailed, TransientError

__all__ = [
    "PREFIX",
    "TAG_CREATED",
    "TAG_EXPIRES",
    "TAG_KEPT",
    "TAG_RUNBOOK",
    "TAG_RUN_ID",
    "AwsCaller",
    "Limiter",
    "Tolerated",
    "aws_errors",
    "client_config",
    "drill_identifier",
    "drill_tags",
    "error_code",
    "is_not_found",
    "is_retryable",
    "kept_tags",
    "pages",
    "quota_count",
    "tag_value",
    "tolerate",
    "why",
]

T = TypeVar("T")
S = TypeVar("S")

PREFIX = "drill-"
TAG_RUN_ID = "restore-drills:run-id"
TAG_EXPIRES = "restore-drills:expires-at"
TAG_RUNBOOK = "restore-drills:runbook"
TAG_CREATED = "restore-drills:created-at"
# Set by `drill run --keep TTL` once the drill passed: the resource is kept for inspection, and its own
# expires-at tag (moved to the end of the TTL) alone decides when the sweeper may delete it.
TAG_KEPT = "restore-drills:kept-at"

THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "500",
        "502",
        "503",
        "504",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "DBInstanceNotFound",
        "DBInstanceNotFoundFault",
        "DBClusterNotFoundFault",
        "DBSubnetGroupNotFoundFault",
        "DBSnapshotNotFound",
        "DBSnapshotNotFoundFault",
        "DBClusterSnapshotNotFoundFault",
        "InvalidGroup.NotFound",
        "InvalidGroupId.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidVpcID.NotFound",
        "NotFoundException",
    }
)
# Errors that mean "something still depends on it", i.e. try again in a while.
DEPENDENCY_CODES = frozenset(
    {
        "DependencyViolation",
        "InvalidDBSubnetGroupStateFault",
        "InvalidDBClusterStateFault",
        "InvalidDBInstanceState",
        "InvalidDBInstanceStateFault",
    }
)


def client_config() -> Any:
    """botocore Config with its retries off: ours run on the injected clock."""
    from botocore.config import Config

    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="restore-drills",
    )


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        err = response.get("Error")
        if isinstance(err, Mapping) and err.get("Code") is not None:
            return str(err["Code"])
    return None


def _is_connection_error(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ReadTimeoutError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return False
    return isinstance(exc, BotoConnectionError | ReadTimeoutError)


def _is_unparsable_response(exc: BaseException) -> bool:
    """An answer botocore could not read: an HTML error page from a proxy or load balancer in front of the
    API (moto's server does it under load, too). Nothing was learnt, so it is worth another attempt; a
    create that did go through is adopted by its caller on ``AlreadyExists``."""
    try:
        from botocore.parsers import ResponseParserError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return False
    return isinstance(exc, ResponseParserError)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx, unreadable answers and dropped connections are worth another attempt."""
    code = error_code(exc)
    if code is not None:
        return code in THROTTLE_CODES or code in TRANSIENT_CODES
    return isinstance(exc, TransientError) or _is_connection_error(exc) or _is_unparsable_response(exc)


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def _op_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "aws-call")


class Limiter(Protocol):
    """A shared API budget (:class:`drills.aws.budget.Budget`): blocks until ``client`` may call once more."""

    def take(self, client: Any) -> None: ...


class AwsCaller:
    """Calls AWS with one retry policy, on the injected clock, within a deadline.

    Retryable failures (throttling, 5xx, connection drops) are retried with
    full-jitter exponential backoff; others are raised unchanged so callers can
    act on the error code (not found, already exists...). When retries run out
    a :class:`TransientError` is raised, carrying the last AWS error. With a
    ``limiter`` (``drill fleet --budget``), every attempt first takes a token.
    """

    def __init__(
        self,
        clock: Clock,
        deadline_ns: int,
        *,
        attempts: int = 8,
        max_backoff: float = 20.0,
        on_retry: Callable[[str, BaseException], None] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.clock = clock
        self.deadline_ns = deadline_ns
        self.attempts = attempts
        self.max_backoff = max_backoff
        self.on_retry = on_retry
        self.limiter = limiter
        self.calls = 0

    def remaining(self) -> float:
        return max(0.0, (self.deadline_ns - self.clock.monotonic_ns()) / 1e9)

    def _stop(self, state: RetryCallState) -> bool:
        if stop_after_attempt(self.attempts)(state):
            return True
        return (state.upcoming_sleep or 0.0) >= self.remaining()

    def __call__(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if self.on_retry is not None and exc is not None:
                self.on_retry(_op_name(fn), exc)

        retrying = Retrying(
            sleep=self.clock.sleep,
            stop=self._stop,
            wait=wait_random_exponential(multiplier=0.5, max=self.max_backoff),
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )

        def once() -> T:
            if self.limiter is not None:  # the bound method's client says which region's budget pays
                self.limiter.take(getattr(fn, "__self__", None))
            self.calls += 1
            return fn(**kwargs)

        try:
            return retrying(once)
        except Exception as exc:
            if is_retryable(exc) and not isinstance(exc, TransientError):
                raise TransientError(
                    f"{_op_name(fn)}: still failing after retries ({error_code(exc) or type(exc).__name__})",
                    hint="AWS is throttling or unavailable; the drill can be retried later",
                ) from exc
            raise


def pages(fetch: Callable[[dict[str, Any]], Mapping[str, Any]], key: str) -> Iterator[Any]:
    """Items of a Marker-paginated describe call; ``fetch`` gets the extra kwargs."""
    marker: str | None = None
    while True:
        page = fetch({"Marker": marker} if marker else {})
        yield from page.get(key, [])
        marker = page.get("Marker")
        if not marker:
            return


_SLUG = re.compile(r"[^a-z0-9]+")


def drill_identifier(runbook: str, run_id: str, suffix: str = "") -> str:
    """``drill-<runbook>-<8 hex of the run id>[-suffix]``, valid as an RDS identifier.

    RDS identifiers: 1-63 letters, digits, hyphens; start with a letter; no
    double or trailing hyphen. The run id is hashed so any run id fits.
    """
    slug = _SLUG.sub("-", runbook.lower()).strip("-") or "runbook"
    short = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    tail = f"-{short}" + (f"-{suffix}" if suffix else "")
    room = 63 - len(PREFIX) - len(tail)
    slug = slug[:room].rstrip("-") or "rb"
    return f"{PREFIX}{slug}{tail}"


def drill_tags(run_id: str, runbook: str, now: datetime, ttl: timedelta) -> list[dict[str, str]]:
    """The tags that make a resource this run's, and sweepable after ``ttl``."""
    return [
        {"Key": TAG_RUN_ID, "Value": run_id},
        {"Key": TAG_RUNBOOK, "Value": runbook or "unknown"},
        {"Key": TAG_CREATED, "Value": iso(now)},
        {"Key": TAG_EXPIRES, "Value": iso(now + ttl)},
    ]


def kept_tags(run_id: str, now: datetime, until: datetime) -> list[dict[str, str]]:
    """The tags incident mode puts on a kept resource: kept since ``now``, sweepable after ``until``.

    The run-id tag is repeated so that the IAM policy can require it on every tagging request.
    """
    return [
        {"Key": TAG_RUN_ID, "Value": run_id},
        {"Key": TAG_KEPT, "Value": iso(now)},
        {"Key": TAG_EXPIRES, "Value": iso(until)},
    ]


def tag_value(tags: Iterable[Mapping[str, Any]] | None, key: str) -> str | None:
    for tag in tags or ():
        if tag.get("Key") == key:
            value = tag.get("Value")
            return None if value is None else str(value)
    return None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def terminal(status: str | None, terminal_states: frozenset[str], what: str) -> None:
    """Raise RestoreFailed for a status from which no wait will recover."""
    if status in terminal_states:
        raise RestoreFailed(
            f"{what} is {status!r}",
            hint="see the RDS events of the restored resource; fix the runbook or the backup and rerun",
        )


def as_infrastructure(exc: BaseException, what: str) -> InfrastructureError:
    """Translate an unexpected botocore error into ours (never leaks botocore types)."""
    code = error_code(exc)
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return InfrastructureError(f"{what}: access denied ({code})", hint="compare with docs/iam-policy.json")
    return InfrastructureError(f"{what}: {code or type(exc).__name__}: {exc}")


@contextlib.contextmanager
def aws_errors(what: str, *, preflight: bool = False) -> Iterator[None]:
    """Translate botocore errors at the edge; ours pass through unchanged."""
    try:
        yield
    except DrillError:
        raise
    except Exception as exc:
        if error_code(exc) is None and not type(exc).__module__.startswith("botocore"):
            raise
        if preflight and error_code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            raise PreflightError(
                f"{what}: access denied ({error_code(exc)})", hint="grant the actions in docs/iam-policy.json"
            ) from exc
        raise as_infrastructure(exc, what) from exc


def quota_count(value: Any) -> int | None:
    """A quota count as AWS sends it (a non-negative integer), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{error_code(exc) or type(exc).__name__}{': ' + text[:200] if text else ''}"


class Tolerated(Exception):
    """Raised by :func:`tolerate` when the tolerated error code came back."""


def tolerate(call: AwsCaller, fn: Any, code: str, **kwargs: Any) -> Any:
    try:
        return call(fn, **kwargs)
    except Exception as exc:
        if error_code(exc) == code:
            raise Tolerated(code) from exc
        raise
