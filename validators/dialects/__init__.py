"""What differs between PostgreSQL and MySQL/MariaDB, and nothing else.

A :class:`Dialect` is a bag of SQL texts and a quoting function. Every query
it provides returns rows of the same shape on both engines (documented on the
protocol), so schema capture, row counts, smoke and freshness are written
once. The dialect modules import their driver lazily (only the PostgreSQL one
needs :mod:`psycopg.sql` for quoting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Dialect", "get_dialect", "split_name"]


class Dialect(Protocol):
    """SQL for one engine. Row shapes below are what the shared code expects."""

    engine: str
    version_sql: str
    #: one row: the schema (pg) / database (mysql) that unqualified names resolve to
    default_schema_sql: str
    #: rows (schema,) of user schemas: system ones excluded
    schemas_sql: str
    #: catalog queries, each taking ``%(schemas)s`` (see :meth:`schemas_param`):
    #: tables      (schema, table, kind)
    #: columns     (schema, table, column, type, nullable, default, charset, collation, extra)
    #: constraints (schema, table, name, kind p|u|f, column, ref_schema, ref_table, ref_column), ordered
    #: indexes     (schema, table, index, unique, definition)
    #: sequences   (schema, name, type, increment)
    #: views       (schema, name, definition)
    #: triggers    (schema, table, name, timing, event)
    #: routines    (schema, name, kind)
    catalog_sql: dict[str, str]
    #: (schema, table, approximate bytes) per table, ``%(schemas)s``: big tables are counted first
    sizes_sql: str
    #: one row (timestamp or NULL); None when the engine has no such notion
    replay_timestamp_sql: str | None
    #: keyword arguments for ``cursor.execute`` of runbook-written SQL that make the driver run exactly one
    #: statement (a ``COMMIT; SET SESSION ...; DELETE`` string must not get past the READ ONLY session)
    single_statement: dict[str, Any]

    def schemas_param(self, schemas: Sequence[str]) -> Any:
        """``schemas`` in the form this driver expands for ``%(schemas)s``."""
        ...

    def quote_ident(self, name: str) -> str:
        """One identifier, quoted so that any name is safe inside SQL text."""
        ...


def split_name(name: str, *, max_parts: int = 2) -> list[str]:
    """``"orders"`` / ``"public.orders"`` into parts; ValueError when malformed."""
    parts = name.split(".")
    if not 1 <= len(parts) <= max_parts or any(not p for p in parts):
        raise ValueError(f"{name!r} is not a table name (give table or schema.table)")
    return parts


def qualified(dialect: Dialect, parts: Sequence[str]) -> str:
    """Quoted, dot-joined identifier parts."""
    return ".".join(dialect.quote_ident(p) for p in parts)


def count_sql(dialect: Dialect, table: str) -> str:
    """Exact row count of ``table`` (``"t"`` or ``"schema.t"``), safely quoted."""
    return f"select count(*) from {qualified(dialect, split_name(table))}"


def max_sql(dialect: Dialect, column_path: str) -> str:
    """``select max(col) from table`` for ``table.col`` or ``schema.table.col``."""
    parts = column_path.split(".")
    if len(parts) not in (2, 3) or any(not p for p in parts):
        raise ValueError(f"{column_path!r} is not table.column or schema.table.column")
    return f"select max({dialect.quote_ident(parts[-1])}) from {qualified(dialect, parts[:-1])}"


def get_dialect(engine: str) -> Dialect:
    """The dialect of an endpoint's engine."""
    if engine == "postgres":
        from validators.dialects.postgres import PostgresDialect  # engines load on demand

        return PostgresDialect()
    if engine == "mysql":
        from validators.dialects.mysql import MySQLDialect  # engines load on demand

        return MySQLDialect()
    raise ValueError(f"unsupported engine {engine!r}")
