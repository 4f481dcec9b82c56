"""Run every configured check against a restored database, in parallel.

Each check is a :class:`~validators.pool.Task` on one borrowed connection;
``config.parallelism`` worker threads bound both the concurrency and the
number of connections. Checks are submitted cheapest-to-predict first
(schema, smoke, freshness), then row counts largest table first, so the
longest count starts early and does not end up alone at the tail.

Failure policy: only "cannot connect at all" raises :class:`ValidatorError`.
Everything else (a SQL error, a missing table, an unreadable baseline)
becomes a failed :class:`Finding` carrying the error text with the password
masked, so one broken check never hides the others. A query stopped because
it tried to write or needed a privilege says so (:mod:`validators.sqlerrors`).

Least privilege: every session is READ ONLY, admin credentials
(:attr:`Endpoint.admin`) are refused outright, and the first finding
(:mod:`validators.session`) records the role the checks ran as, read back
from the server. When that role could write, the runbook's smoke queries are
not run at all; they fail with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from validators.base import Finding, ValidationReport
from validators.baseline import load_baseline
from validators.config import FreshnessConfig, RowCountRule, SchemaConfig, SmokeQuery, ValidatorsConfig
from validators.connect import connect, describe_error
from validators.dbapi import Connection, fetch_all, fetch_one, sha256_text
from validators.dialects import Dialect, get_dialect
from validators.endpoint import Endpoint
from validators.errors import ValidatorError
from validators.freshness import CHECK as FRESHNESS_CHECK
from validators.freshness import check_freshness
from validators.pool import ConnectionPool, Outcome, Task, run_tasks
from validators.rowcount import finding_for
from validators.schema import capture_catalog, compare, filter_catalog, unverifiable_triggers, without_triggers
from validators.session import CHECK as SESSION_CHECK
from validators.session import VALIDATOR as SESSION
from validators.session import check_session
from validators.smoke import run_smoke
from validators.sqlerrors import explain

__all__ = ["run_validators"]


@dataclass(frozen=True)
class _Result:
    """What a task hands back: findings, plus the newest commit for freshness."""

    findings: list[Finding]
    newest: str | None = None


def _schema_task(
    conn: Connection,
    *,
    dialect: Dialect,
    cfg: SchemaConfig,
    baseline: dict[str, Any] | None,
    problem: str | None,
    triggers_visible: bool,
) -> _Result:
    if baseline is None:
        return _Result([Finding("schema", "schema matches baseline", False, detail=problem or "no baseline")])
    if baseline.get("engine") != dialect.engine:
        detail = f"the baseline was captured on {baseline.get('engine')}, the restore runs {dialect.engine}"
        return _Result([Finding("schema", "schema matches baseline", False, detail=detail)])
    actual = capture_catalog(conn, dialect, cfg.schemas)
    expected = filter_catalog(baseline["schema"], cfg.schemas)
    if triggers_visible:
        return _Result(compare(expected, actual, ignore=cfg.ignore))
    unverified = unverifiable_triggers(expected, cfg.ignore)
    found = compare(without_triggers(expected), without_triggers(actual), ignore=cfg.ignore)
    return _Result([*found, unverified] if unverified else found)


def _triggers_visible(dialect: Dialect, session: Finding) -> bool:
    """PostgreSQL shows every trigger; MySQL only to a holder of TRIGGER, which a read-only session lacks."""
    if dialect.engine != "mysql":
        return True
    facts = session.actual if isinstance(session.actual, dict) else {}
    return "TRIGGER" in (facts.get("privileges") or ())


def _count_task(
    conn: Connection,
    *,
    dialect: Dialect,
    table: str,
    rule: RowCountRule,
    counts: Mapping[str, int] | None,
    default_schema: str | None,
) -> _Result:
    found = finding_for(conn, dialect, table, rule=rule, baseline_counts=counts, default_schema=default_schema)
    return _Result([found])


def _smoke_task(conn: Connection, *, query: SmokeQuery, params: Mapping[str, Any], dialect: Dialect) -> _Result:
    return _Result([run_smoke(conn, query, params, dialect)])


def _freshness_task(conn: Connection, *, dialect: Dialect, cfg: FreshnessConfig, params: Mapping[str, Any]) -> _Result:
    newest, finding = check_freshness(conn, dialect, cfg, params)
    return _Result([finding], newest)


def _resolve_baseline(config: ValidatorsConfig, given: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """The baseline to use, or None and why not."""
    if given is not None:
        return given, ""
    path = config.baseline or (config.schema_.baseline if config.schema_ else None)
    if path is None:
        return None, "no baseline configured"
    try:
        return load_baseline(path), ""
    except ValidatorError as exc:
        return None, str(exc)


def _prepare(conn: Connection, dialect: Dialect) -> tuple[str | None, dict[str, int]]:
    """Default schema (to resolve unqualified names) and table sizes (to order counts)."""
    try:
        row = fetch_one(conn, dialect.default_schema_sql)
        default_schema = str(row[0]) if row and row[0] is not None else None
        schemas = [str(r[0]) for r in fetch_all(conn, dialect.schemas_sql)]
        sizes: dict[str, int] = {}
        if schemas:
            rows = fetch_all(conn, dialect.sizes_sql, {"schemas": dialect.schemas_param(schemas)})
            sizes = {f"{s}.{t}": int(n or 0) for s, t, n in rows}
        return default_schema, sizes
    except Exception:  # ordering is an optimization; the checks themselves will report real errors
        return None, {}


def _size_of(table: str, sizes: Mapping[str, int], default_schema: str | None) -> int:
    return sizes.get(table, sizes.get(f"{default_schema}.{table}", 0))


def _failed(outcome: Outcome[_Result], template: Finding, endpoint: Endpoint) -> Finding:
    """The finding of a check that could not run: what it expected, why (when we know), and the error."""
    error = outcome.error or Exception("no result")
    why = explain(error)
    text = describe_error(error, endpoint)
    return replace(template, passed=False, detail=f"{why}: {text}" if why else text)


def _session(conn: Connection, dialect: Dialect, endpoint: Endpoint) -> Finding:
    """The session finding; an error reading it is a failed finding (and no runbook SQL runs)."""
    t0 = time.monotonic_ns()
    try:
        found = check_session(conn, dialect)
    except Exception as exc:
        detail = f"cannot read what the session may do: {describe_error(exc, endpoint)}"
        found = Finding(SESSION, SESSION_CHECK, False, detail=detail)
    return replace(found, duration_ms=(time.monotonic_ns() - t0) // 1_000_000)


def run_validators(
    endpoint: Endpoint,
    config: ValidatorsConfig,
    *,
    params: Mapping[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    timeout_s: int = 10,
) -> ValidationReport:
    """Run schema, row count, smoke and freshness checks in parallel; one report.

    ``params`` are passed to smoke queries (``{"target_time": datetime}``);
    ``target_time`` also bounds freshness. ``baseline`` is a loaded baseline;
    when None it is read from ``config.baseline`` / ``config.schema.baseline``.
    """
    started = time.monotonic_ns()
    _refuse_admin(endpoint)
    params = dict(params or {})
    dialect = get_dialect(endpoint.engine)
    first = connect(endpoint, timeout_s=timeout_s, read_only=True)  # the one failure that raises
    base, problem = _resolve_baseline(config, baseline)
    counts = base.get("row_counts") if base else None

    with ConnectionPool(endpoint, timeout_s=timeout_s, first=first, read_only=True) as pool:
        session = _session(first, dialect, endpoint)
        default_schema, sizes = _prepare(first, dialect)
        templates: list[Finding] = []  # what each task reports if it raises
        tasks: list[Task[_Result]] = []

        def add(template: Finding, fn: Any, *, disposable: bool = False) -> None:
            templates.append(template)
            tasks.append(Task(template.check, fn, disposable))

        if config.schema_ is not None:
            visible = _triggers_visible(dialect, session)
            fn = partial(
                _schema_task,
                dialect=dialect,
                cfg=config.schema_,
                baseline=base,
                problem=problem,
                triggers_visible=visible,
            )
            add(Finding("schema", "schema matches baseline", False), fn)
        refused: list[Finding] = []  # runbook SQL is not run by a session that may write
        for q in config.smoke:
            template = Finding("smoke", q.name, False, expected=f"{q.op} {q.expect!r}", query_sha256=sha256_text(q.sql))
            if session.passed:
                add(template, partial(_smoke_task, query=q, params=params, dialect=dialect), disposable=True)
            else:
                refused.append(replace(template, detail=f"not run: {session.detail}"))
        if config.freshness is not None:
            fn = partial(_freshness_task, dialect=dialect, cfg=config.freshness, params=params)
            add(Finding("freshness", FRESHNESS_CHECK, False), fn)
        by_size = sorted(config.row_counts.items(), key=lambda kv: -_size_of(kv[0], sizes, default_schema))
        for table, rule in by_size:
            fn = partial(
                _count_task, dialect=dialect, table=table, rule=rule, counts=counts, default_schema=default_schema
            )
            add(Finding("row_counts", f"{table} rows", False, expected=rule.model_dump(exclude_defaults=True)), fn)
        outcomes = run_tasks(pool, tasks, config.parallelism)

    per_kind: dict[str, list[Finding]] = {
        SESSION: [session],
        "schema": [],
        "row_counts": [],
        "smoke": refused,
        "freshness": [],
    }
    newest: str | None = None
    for template, outcome in zip(templates, outcomes, strict=True):
        kind = template.validator
        if outcome.error is not None or outcome.value is None:
            found = [_failed(outcome, template, endpoint)]
        else:
            found = outcome.value.findings
            newest = outcome.value.newest if kind == "freshness" else newest
        per_kind[kind].extend(replace(f, duration_ms=outcome.duration_ms) for f in found)
    if problem and counts is None and config.schema_ is None and _needs_baseline(config):
        per_kind["row_counts"].insert(0, Finding("row_counts", "baseline", False, detail=problem))
    return ValidationReport(
        findings=_in_runbook_order(per_kind, config),
        newest_commit_at=newest,
        freshness_method=config.freshness.method if config.freshness else None,
        duration_ms=(time.monotonic_ns() - started) // 1_000_000,
    )


def _refuse_admin(endpoint: Endpoint) -> None:
    if endpoint.admin:
        raise ValidatorError(
            f"refusing to run checks as {endpoint.user}: these are admin credentials",
            hint="checks run as the read-only role created with them (validators.roles.create_reader)",
        )


def _in_runbook_order(per_kind: dict[str, list[Finding]], config: ValidatorsConfig) -> tuple[Finding, ...]:
    """Session first, then kind by kind; counts and smoke queries in the runbook's order, whatever ran first."""
    order = {f"{t} rows": i for i, t in enumerate(config.row_counts)}
    per_kind["row_counts"].sort(key=lambda f: order.get(f.check, -1))
    smoke_order = {q.name: i for i, q in enumerate(config.smoke)}
    per_kind["smoke"].sort(key=lambda f: smoke_order.get(f.check, 0))
    return tuple(f for kind in (SESSION, "schema", "row_counts", "smoke", "freshness") for f in per_kind[kind])


def _needs_baseline(config: ValidatorsConfig) -> bool:
    return any(r.equals_baseline or r.within_pct is not None for r in config.row_counts.values())
