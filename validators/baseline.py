"""Baselines: what the production database looked like, to compare a restore against.

A baseline is captured once from production (or from a known-good restore)
with ``drill baseline capture`` and checked into the repository next to the
runbook. It holds the normalized catalog (:mod:`validators.schema`) and exact
row counts, so ``within_pct`` / ``equals_baseline`` rules and schema drift
need no access to production during a drill.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from validators.connect import connect, describe_error
from validators.dbapi import Connection, fetch_all, fetch_one
from validators.dialects import Dialect, get_dialect
from validators.dsn import endpoint_from_dsn
from validators.endpoint import Endpoint
from validators.errors import ValidatorError
from validators.pool import ConnectionPool, Task, run_tasks
from validators.rowcount import count_rows
from validators.schema import capture_catalog

__all__ = ["BASELINE_FORMAT", "capture_baseline", "endpoint_from_dsn", "load_baseline", "write_baseline"]

BASELINE_FORMAT = 1


def capture_baseline(
    endpoint: Endpoint, schemas: Sequence[str] | None = None, *, parallelism: int = 4, timeout_s: int = 10
) -> dict[str, Any]:
    """Catalog and exact row counts of every table in ``schemas`` (default: all user schemas)."""
    dialect = get_dialect(endpoint.engine)
    first = connect(endpoint, timeout_s=timeout_s, read_only=True)  # production: read-only sessions, always
    with ConnectionPool(endpoint, timeout_s=timeout_s, first=first) as pool:
        try:
            version_row = fetch_one(first, dialect.version_sql)
            catalog = capture_catalog(first, dialect, schemas)
            sizes: dict[str, int] = {}
            if catalog["schemas"]:
                params = {"schemas": dialect.schemas_param(catalog["schemas"])}
                sizes = {f"{s}.{t}": int(n or 0) for s, t, n in fetch_all(first, dialect.sizes_sql, params)}
        except Exception as exc:
            raise ValidatorError(f"cannot read the catalog: {describe_error(exc, endpoint)}") from None
        tables = sorted(catalog["tables"], key=lambda t: -sizes.get(t, 0))
        tasks = [Task(t, partial(_count, dialect=dialect, table=t)) for t in tables]
        outcomes = run_tasks(pool, tasks, parallelism)
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.error is not None:
            raise ValidatorError(f"cannot count rows of {o.task.name}: {describe_error(o.error, endpoint)}")
        assert o.value is not None
        counts[o.task.name] = o.value
    return {
        "format": BASELINE_FORMAT,
        "engine": endpoint.engine,
        "database": endpoint.database,
        "captured_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "server_version": " ".join(str(version_row[0]).split()) if version_row else "unknown",
        "schema": catalog,
        "row_counts": dict(sorted(counts.items())),
    }


def _count(conn: Connection, *, dialect: Dialect, table: str) -> int:
    return count_rows(conn, dialect, table)[0]


def _check(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidatorError(f"{where}: a baseline is a JSON object, found {type(data).__name__}")
    if data.get("format") != BASELINE_FORMAT:
        raise ValidatorError(
            f"{where}: baseline format {data.get('format')!r} is not supported (this version reads {BASELINE_FORMAT})",
            hint="capture it again with `drill baseline capture`",
        )
    if data.get("engine") not in ("postgres", "mysql"):
        raise ValidatorError(f"{where}: engine must be postgres or mysql, found {data.get('engine')!r}")
    schema = data.get("schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("tables"), dict):
        raise ValidatorError(f"{where}: `schema.tables` is missing or not an object")
    counts = data.get("row_counts")
    if not isinstance(counts, dict):
        raise ValidatorError(f"{where}: `row_counts` is missing or not an object")
    for table, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidatorError(f"{where}: row_counts.{table} must be a non-negative integer, found {n!r}")
    return data


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file; :class:`ValidatorError` says what is wrong and where."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidatorError(f"cannot read baseline {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValidatorError(f"baseline {p} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidatorError(f"{p}:{exc.lineno}:{exc.colno}: baseline is not valid JSON: {exc.msg}") from None
    return _check(data, str(p))


def write_baseline(baseline: dict[str, Any], path: str | Path) -> Path:
    """Write ``baseline`` atomically (a reader never sees half a file); returns the path."""
    p = Path(path)
    _check(baseline, "baseline to write")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(baseline, fh, indent=2, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
