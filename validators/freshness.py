"""Freshness: the newest commit the restored database contains.

This is what the RPO is measured from: the gap between the incident (or
target) time and the newest data that survived the restore. Two methods:

- ``column``: ``select max(col) from table`` on a timestamp column the
  application writes on every change (e.g. ``orders.updated_at``);
- ``replay_timestamp`` (PostgreSQL): ``pg_last_xact_replay_timestamp()``, the
  commit time of the last transaction replayed from WAL.

Naive timestamps are read as UTC (the sessions run in UTC). When the drill
restores to a target time, data newer than the target means the restore went
past it, and the finding fails.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from validators.base import Finding
from validators.config import FreshnessConfig
from validators.dbapi import Connection, fetch_one, sha256_text
from validators.dialects import Dialect, max_sql

__all__ = ["check_freshness", "to_utc"]

VALIDATOR = "freshness"
CHECK = "newest commit"


def to_utc(value: Any) -> dt.datetime | None:
    """A driver value (datetime, date, ISO text) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise TypeError(f"{type(value).__name__} is not a timestamp")


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def check_freshness(
    conn: Connection, dialect: Dialect, config: FreshnessConfig, params: Mapping[str, Any]
) -> tuple[str | None, Finding]:
    """``(newest commit as ISO-8601 UTC or None, finding)``."""
    if config.method == "replay_timestamp":
        if dialect.replay_timestamp_sql is None:
            detail = f"method replay_timestamp is not available on {dialect.engine}; use `column: table.column`"
            return None, Finding(VALIDATOR, CHECK, False, detail=detail)
        sql = dialect.replay_timestamp_sql
        source = "pg_last_xact_replay_timestamp()"
    else:
        assert config.column is not None  # guaranteed by FreshnessConfig's validator
        sql = max_sql(dialect, config.column)
        source = f"max({config.column})"
    row = fetch_one(conn, sql)
    newest = to_utc(row[0] if row else None)
    target = to_utc(params.get("target_time"))
    expected = f"<= {_iso(target)}" if target else "a timestamp"
    sha = sha256_text(sql)
    if newest is None:
        why = "the table is empty" if config.method == "column" else "the server replayed no transaction from WAL"
        return None, Finding(VALIDATOR, CHECK, False, expected, None, f"{source} is NULL: {why}", sha)
    actual = _iso(newest)
    if target is not None and newest > target:
        detail = f"{source} = {actual} is after the target time {_iso(target)}: the restore went past the target"
        return actual, Finding(VALIDATOR, CHECK, False, expected, actual, detail, sha)
    return actual, Finding(VALIDATOR, CHECK, True, expected, actual, f"{source} = {actual}", sha)
