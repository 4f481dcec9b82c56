"""The sliver of DB-API 2.0 the validators use, and helpers around it.

psycopg 3 and pymysql connections both satisfy :class:`Connection`; typing
against this protocol keeps every check driver-neutral (and lets mypy check
them without importing a driver). Both drivers use the ``%(name)s``
paramstyle, so the same SQL text and parameter dict work on either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

__all__ = ["Connection", "Cursor", "fetch_all", "fetch_one", "jsonable", "redact", "sha256_text"]


class Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., /, **options: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Sequence[Any]: ...
    def close(self) -> None: ...


class Connection(Protocol):
    def cursor(self) -> Cursor: ...
    def close(self) -> None: ...


def fetch_all(conn: Connection, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` and return every row as a tuple.

    Parameters are passed only when given: with parameters, both drivers
    treat ``%`` as a placeholder marker, so a query without placeholders
    must not be handed an (empty) parameter dict.
    """
    cur = conn.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


def fetch_one(
    conn: Connection, sql: str, params: Mapping[str, Any] | None = None, **options: Any
) -> tuple[Any, ...] | None:
    """The first row of ``sql`` (or None when it returns no row); ``options`` go to ``cursor.execute``."""
    cur = conn.cursor()
    try:
        if params is None and not options:
            cur.execute(sql)
        else:
            cur.execute(sql, params, **options)
        row = cur.fetchone()
        return None if row is None else tuple(row)
    finally:
        cur.close()


def sha256_text(sql: str) -> str:
    """Digest of a query text: ties a finding to its exact SQL without storing it."""
    return hashlib.sha256(sql.encode()).hexdigest()


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` masked: a last line of defence for error texts.

    Driver messages do not echo passwords today, but a DSN in a traceback or
    a future driver version might; findings end up in signed evidence.
    """
    if secret:
        message = message.replace(secret, "********")
    return message


def _decimal(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


_SCALARS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    ((bool, int, str), lambda v: v),
    (float, lambda v: v if math.isfinite(v) else str(v)),
    (Decimal, _decimal),
    ((dt.datetime, dt.date, dt.time), lambda v: v.isoformat()),
    (dt.timedelta, lambda v: v.total_seconds()),
    ((bytes, bytearray, memoryview), lambda v: bytes(v).hex()),
)


def jsonable(value: Any) -> Any:
    """A driver value as something ``json.dumps`` (and RFC 8785) accepts."""
    if value is None:
        return None
    for types, convert in _SCALARS:
        if isinstance(value, types):
            return convert(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)
