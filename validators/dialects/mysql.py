"""MySQL / MariaDB: information_schema queries and backtick quoting.

Only ``information_schema`` is used (no ``SHOW`` statements), so the same
queries work on MySQL 5.7/8.x and MariaDB 10.x and need nothing beyond
SELECT on the objects. Character set and collation are part of a column here
because a dump restored with the wrong defaults silently changes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MySQLDialect"]

_SYSTEM = "('mysql', 'sys', 'performance_schema', 'information_schema')"

_TABLES = """
select table_schema, table_name, 'table' from information_schema.tables
where table_type = 'BASE TABLE' and table_schema in %(schemas)s
order by 1, 2
"""

_COLUMNS = """
select c.table_schema, c.table_name, c.column_name, c.column_type, c.is_nullable = 'YES', c.column_default,
       c.character_set_name, c.collation_name, nullif(c.extra, '')
from information_schema.columns c
join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
where t.table_type = 'BASE TABLE' and c.table_schema in %(schemas)s
order by 1, 2, c.ordinal_position
"""

_CONSTRAINTS = """
select k.table_schema, k.table_name, k.constraint_name,
       case tc.constraint_type when 'PRIMARY KEY' then 'p' when 'UNIQUE' then 'u' else 'f' end,
       k.column_name, k.referenced_table_schema, k.referenced_table_name, k.referenced_column_name
from information_schema.key_column_usage k
join information_schema.table_constraints tc
  on tc.constraint_schema = k.constraint_schema and tc.table_name = k.table_name
 and tc.constraint_name = k.constraint_name
where tc.constraint_type in ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY') and k.table_schema in %(schemas)s
order by 1, 2, 3, k.ordinal_position
"""

_INDEXES = """
select table_schema, table_name, index_name, max(non_unique) = 0,
       concat(max(index_type), ' (',
              group_concat(concat(column_name, if(sub_part is null, '', concat('(', sub_part, ')')))
                           order by seq_in_index separator ', '), ')')
from information_schema.statistics
where table_schema in %(schemas)s
group by table_schema, table_name, index_name
order by 1, 2, 3
"""

# MariaDB 10.3+ has sequences (table_type 'SEQUENCE'); MySQL has none and returns no row.
_SEQUENCES = """
select table_schema, table_name, 'sequence', null from information_schema.tables
where table_type = 'SEQUENCE' and table_schema in %(schemas)s
order by 1, 2
"""

_VIEWS = """
select table_schema, table_name, view_definition from information_schema.views
where table_schema in %(schemas)s
order by 1, 2
"""

_TRIGGERS = """
select event_object_schema, event_object_table, trigger_name, action_timing, event_manipulation
from information_schema.triggers
where trigger_schema in %(schemas)s
order by 1, 2, 3
"""

_ROUTINES = """
select routine_schema, routine_name, routine_type from information_schema.routines
where routine_schema in %(schemas)s
order by 1, 2
"""

_SIZES = """
select table_schema, table_name, coalesce(data_length, 0) + coalesce(index_length, 0)
from information_schema.tables
where table_type = 'BASE TABLE' and table_schema in %(schemas)s
"""


class MySQLDialect:
    engine = "mysql"
    version_sql = "select version()"
    default_schema_sql = "select database()"
    schemas_sql = f"select schema_name from information_schema.schemata where schema_name not in {_SYSTEM} order by 1"
    catalog_sql = {  # noqa: RUF012 - read-only class-level table of queries
        "tables": _TABLES,
        "columns": _COLUMNS,
        "constraints": _CONSTRAINTS,
        "indexes": _INDEXES,
        "sequences": _SEQUENCES,
        "views": _VIEWS,
        "triggers": _TRIGGERS,
        "routines": _ROUTINES,
    }
    sizes_sql = _SIZES
    replay_timestamp_sql: str | None = None
    # pymysql never sets CLIENT.MULTI_STATEMENTS unless asked: the server refuses a second statement as is.
    single_statement: dict[str, Any] = {}  # noqa: RUF012 - read-only class-level constant

    def schemas_param(self, schemas: Sequence[str]) -> Any:
        return tuple(schemas)  # pymysql renders a tuple as ('a', 'b') for `in %(schemas)s`

    def quote_ident(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"
