"""Smoke queries: named queries that return one value, compared to an expectation.

The query text is the runbook's; parameters (``%(target_time)s``) are passed
to the driver, never formatted into the text. Both drivers treat ``%`` as a
placeholder marker only when parameters are passed, so parameters are passed
only to queries that name one (a query without placeholders may use ``LIKE
'a%'`` as written; one with placeholders writes ``%%``).

The query runs as the validators' read-only role, in a READ ONLY session of
its own, as exactly one statement (:attr:`Dialect.single_statement`): what it
may do is read. A query that tries more fails, and the runner says why
(:mod:`validators.sqlerrors`).

Drivers return ``Decimal``, ``datetime``, ``1``/``0`` for booleans on MySQL;
:func:`matches` normalizes those against the runbook's scalar before
comparing, so ``expect: true`` works on both engines.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from validators.base import Finding
from validators.config import Scalar, SmokeQuery
from validators.dbapi import Connection, fetch_one, jsonable, sha256_text
from validators.dialects import Dialect

__all__ = ["driver_params", "matches", "run_smoke"]

VALIDATOR = "smoke"

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _coerce(actual: Any, expect: Scalar) -> tuple[Any, Any]:
    """Bring a driver value and a runbook scalar to comparable types."""
    if isinstance(actual, Decimal):
        actual = int(actual) if actual == actual.to_integral_value() else float(actual)
    if isinstance(expect, bool) and isinstance(actual, int):
        return bool(actual), expect
    if isinstance(expect, str) and isinstance(actual, dt.datetime):
        return _as_utc(actual), _as_utc(dt.datetime.fromisoformat(expect))
    if isinstance(expect, str) and isinstance(actual, dt.date):
        return actual, dt.date.fromisoformat(expect)
    if isinstance(expect, int | float) and not isinstance(expect, bool) and isinstance(actual, str):
        return float(actual), expect
    if isinstance(expect, str) and not isinstance(actual, str) and actual is not None:
        return str(actual), expect
    return actual, expect


def matches(actual: Any, op: str, expect: Scalar) -> bool:
    """``actual <op> expect`` after normalization; TypeError/ValueError when incomparable."""
    if actual is None or expect is None:
        if op not in ("==", "!="):
            raise TypeError(f"cannot order NULL with {op}")
        return (actual is None) == (expect is None) if op == "==" else (actual is None) != (expect is None)
    a, e = _coerce(actual, expect)
    return bool(_OPS[op](a, e))


def driver_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Aware datetimes moved to UTC: pymysql drops the offset when it renders one,
    and the session runs in UTC, so only UTC digits mean the same on both engines."""
    return {k: v.astimezone(dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo else v for k, v in params.items()}


# MySQL's LOAD_FILE() answers NULL, not an error, when the user lacks the FILE privilege.
_LOAD_FILE = re.compile(r"\bload_file\s*\(", re.IGNORECASE)


def run_smoke(conn: Connection, query: SmokeQuery, params: Mapping[str, Any], dialect: Dialect) -> Finding:
    """Run one smoke query (one statement only) and compare its first value."""
    bound = driver_params(params) if "%(" in query.sql else None
    row = fetch_one(conn, query.sql, bound, **dialect.single_statement)
    actual = row[0] if row else None
    sha = sha256_text(query.sql)
    expected = f"{query.op} {query.expect!r}"
    try:
        ok = matches(actual, query.op, query.expect)
        detail = "" if row else "the query returned no row"
    except (TypeError, ValueError) as exc:
        ok, detail = False, f"cannot compare {jsonable(actual)!r} with {query.expect!r}: {exc}"
    if not ok and not detail:
        detail = f"got {jsonable(actual)!r}, expected {expected}"
    if not ok and actual is None and dialect.engine == "mysql" and _LOAD_FILE.search(query.sql):
        detail += "; LOAD_FILE() reads no file without the FILE privilege, which the validators' read-only user lacks"
    return Finding(
        VALIDATOR, query.name, ok, expected=expected, actual=jsonable(actual), detail=detail, query_sha256=sha
    )
