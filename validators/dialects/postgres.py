"""PostgreSQL: pg_catalog queries and psycopg quoting.

The catalog is read from ``pg_catalog`` rather than ``information_schema``
because the latter hides objects the connected role does not own and has no
notion of index definitions. Objects that belong to extensions are left out:
they come with ``CREATE EXTENSION`` and vary with the extension version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PostgresDialect"]

_SCHEMAS = """
select nspname from pg_namespace
where nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
  and nspname !~ '^pg_(toast_)?temp_'
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_namespace'::regclass and d.objid = pg_namespace.oid and d.deptype = 'e')
order by 1
"""

_NOT_EXTENSION = """not exists (select 1 from pg_depend dep
    where dep.classid = '{catalog}'::regclass and dep.objid = {oid} and dep.deptype = 'e')"""

_TABLES = f"""
select n.nspname, c.relname, case c.relkind when 'p' then 'partitioned' else 'table' end
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname = any(%(schemas)s)
  and {_NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")}
order by 1, 2
"""

_COLUMNS = """
select n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), not a.attnotnull,
       case when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end,
       null::text,
       case when a.attcollation <> t.typcollation then co.collname::text end,
       case a.attidentity when 'a' then 'identity always' when 'd' then 'identity by default'
            else case a.attgenerated when 's' then 'generated: ' || pg_get_expr(d.adbin, d.adrelid) end end
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_type t on t.oid = a.atttypid
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
left join pg_collation co on co.oid = a.attcollation
where c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped and n.nspname = any(%(schemas)s)
order by 1, 2, a.attnum
"""

_CONSTRAINTS = """
select n.nspname, c.relname, con.conname, con.contype::text, a.attname, fn.nspname, fc.relname, fa.attname
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
cross join lateral unnest(con.conkey) with ordinality as k(attnum, ord)
join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
left join pg_class fc on fc.oid = con.confrelid
left join pg_namespace fn on fn.oid = fc.relnamespace
left join pg_attribute fa on fa.attrelid = con.confrelid and fa.attnum = con.confkey[k.ord]
where con.contype in ('p', 'u', 'f') and n.nspname = any(%(schemas)s)
order by 1, 2, 3, k.ord
"""

_INDEXES = """
select n.nspname, c.relname, i.relname, x.indisunique, pg_get_indexdef(x.indexrelid)
from pg_index x
join pg_class i on i.oid = x.indexrelid
join pg_class c on c.oid = x.indrelid
join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname = any(%(schemas)s)
order by 1, 2, 3
"""

_SEQUENCES = """
select schemaname, sequencename, data_type::text, increment_by
from pg_sequences where schemaname = any(%(schemas)s)
order by 1, 2
"""

_VIEWS = f"""
select n.nspname, c.relname,
       case c.relkind when 'm' then 'materialized: ' else '' end || pg_get_viewdef(c.oid, true)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('v', 'm') and n.nspname = any(%(schemas)s)
  and {_NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")}
order by 1, 2
"""

_TRIGGERS = """
select n.nspname, c.relname, tg.tgname,
       case when tg.tgtype & 2 <> 0 then 'BEFORE' when tg.tgtype & 64 <> 0 then 'INSTEAD OF' else 'AFTER' end,
       concat_ws(' OR ', case when tg.tgtype & 4 <> 0 then 'INSERT' end,
                 case when tg.tgtype & 8 <> 0 then 'DELETE' end,
                 case when tg.tgtype & 16 <> 0 then 'UPDATE' end,
                 case when tg.tgtype & 32 <> 0 then 'TRUNCATE' end)
from pg_trigger tg
join pg_class c on c.oid = tg.tgrelid
join pg_namespace n on n.oid = c.relnamespace
where not tg.tgisinternal and n.nspname = any(%(schemas)s)
order by 1, 2, 3
"""

_ROUTINES = f"""
select n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       case p.prokind when 'f' then 'FUNCTION' when 'p' then 'PROCEDURE'
                      when 'a' then 'AGGREGATE' else 'WINDOW' end
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname = any(%(schemas)s) and {_NOT_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
order by 1, 2
"""

_SIZES = """
select n.nspname, c.relname, pg_total_relation_size(c.oid)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname = any(%(schemas)s)
"""


class PostgresDialect:
    engine = "postgres"
    version_sql = "show server_version"
    default_schema_sql = "select current_schema()"
    schemas_sql = _SCHEMAS
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
    # On a server restored to a point in time, this is the commit time of the
    # last transaction replayed from WAL; it stays set after promotion.
    replay_timestamp_sql: str | None = "select pg_last_xact_replay_timestamp()"
    # Without parameters psycopg uses the simple query protocol, which runs several statements;
    # a prepared statement (extended protocol) refuses more than one.
    single_statement = {"prepare": True}  # noqa: RUF012 - read-only class-level constant

    def schemas_param(self, schemas: Sequence[str]) -> Any:
        return list(schemas)  # psycopg adapts a list to an array for = any(...)

    def quote_ident(self, name: str) -> str:
        from psycopg import sql  # lazy driver import

        return sql.Identifier(name).as_string(None)
