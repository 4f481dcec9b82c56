"""Schema capture and comparison.

:func:`capture_catalog` reads the catalog into a plain, JSON-able dict with
the same shape on both engines::

    {"schemas": ["public"],
     "tables": {"public.orders": {
         "kind": "table",
         "columns": {"id": {"type": "bigint", "nullable": false, "default": null}, ...},
         "primary_key": ["id"],
         "unique": {"orders_ref_key": ["ref"]},
         "foreign_keys": {"orders_customer_fk": {"columns": [...], "references": "public.customers",
                                                 "ref_columns": [...]}},
         "indexes": {"orders_pkey": {"unique": true, "definition": "..."}},
         "triggers": {"orders_audit": {"timing": "AFTER", "event": "INSERT"}}}},
     "sequences": {"public.orders_id_seq": {"type": "bigint", "increment": 1}},
     "views": {"public.open_orders": {"definition": "..."}},
     "routines": {"public.total(integer)": {"kind": "FUNCTION"}}}

Keys are sorted so two captures of the same schema serialize identically.
:func:`compare` walks two such dicts and returns one finding per difference,
or a single passing finding when there is none: an auditor sees *what*
drifted, not only that something did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from validators.base import Finding
from validators.dbapi import Connection, fetch_all
from validators.dialects import Dialect

__all__ = ["capture_catalog", "compare", "filter_catalog", "unverifiable_triggers", "user_schemas", "without_triggers"]

VALIDATOR = "schema"


def user_schemas(conn: Connection, dialect: Dialect, wanted: Sequence[str] | None = None) -> list[str]:
    """User schemas (pg) / databases (mysql), limited to ``wanted`` when given."""
    present = [str(r[0]) for r in fetch_all(conn, dialect.schemas_sql)]
    if wanted is None:
        return present
    return [s for s in present if s in set(wanted)]


def _q(schema: Any, name: Any) -> str:
    return f"{schema}.{name}"


def capture_catalog(conn: Connection, dialect: Dialect, schemas: Sequence[str] | None = None) -> dict[str, Any]:
    """The normalized catalog of ``schemas`` (default: every user schema)."""
    names = user_schemas(conn, dialect, schemas)
    out: dict[str, Any] = {"schemas": names, "tables": {}, "sequences": {}, "views": {}, "routines": {}}
    if not names:
        return out
    params = {"schemas": dialect.schemas_param(names)}

    def rows(kind: str) -> list[tuple[Any, ...]]:
        return fetch_all(conn, dialect.catalog_sql[kind], params)

    _tables(out["tables"], rows)
    for schema, name, typ, increment in rows("sequences"):
        seq: dict[str, Any] = {"type": str(typ)}
        if increment is not None:
            seq["increment"] = int(increment)
        out["sequences"][_q(schema, name)] = seq
    for schema, name, definition in rows("views"):
        out["views"][_q(schema, name)] = {"definition": " ".join(str(definition or "").split())}
    for schema, name, kind in rows("routines"):
        out["routines"][_q(schema, name)] = {"kind": str(kind)}
    return _sorted(out)


def _tables(tables: dict[str, dict[str, Any]], rows: Callable[[str], list[tuple[Any, ...]]]) -> None:
    for schema, table, kind in rows("tables"):
        tables[_q(schema, table)] = {
            "kind": kind,
            "columns": {},
            "primary_key": None,
            "unique": {},
            "foreign_keys": {},
            "indexes": {},
            "triggers": {},
        }
    for schema, table, column, typ, nullable, default, charset, collation, extra in rows("columns"):
        if (t := tables.get(_q(schema, table))) is not None:
            col: dict[str, Any] = {"type": str(typ), "nullable": bool(nullable), "default": default}
            for key, value in (("charset", charset), ("collation", collation), ("extra", extra)):
                if value is not None:
                    col[key] = str(value)
            t["columns"][str(column)] = col
    _constraints(tables, rows("constraints"))
    for schema, table, index, unique, definition in rows("indexes"):
        if (t := tables.get(_q(schema, table))) is not None:
            t["indexes"][str(index)] = {"unique": bool(unique), "definition": str(definition)}
    for schema, table, name, timing, event in rows("triggers"):
        if (t := tables.get(_q(schema, table))) is not None:
            t["triggers"][str(name)] = {"timing": str(timing), "event": str(event)}


def _constraints(tables: dict[str, dict[str, Any]], rows: list[tuple[Any, ...]]) -> None:
    """Primary, unique and foreign keys: one row per column, in key order."""
    for schema, table, name, kind, column, ref_schema, ref_table, ref_column in rows:
        if (t := tables.get(_q(schema, table))) is None:
            continue
        if kind == "p":
            t["primary_key"] = [*(t["primary_key"] or []), str(column)]
        elif kind == "u":
            t["unique"].setdefault(str(name), []).append(str(column))
        else:
            fk = t["foreign_keys"].setdefault(
                str(name), {"columns": [], "references": _q(ref_schema, ref_table), "ref_columns": []}
            )
            fk["columns"].append(str(column))
            fk["ref_columns"].append(str(ref_column))


def _sorted(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted(v) if isinstance(v, dict) else v for k, v in sorted(value.items())}


def filter_catalog(catalog: dict[str, Any], schemas: Iterable[str] | None) -> dict[str, Any]:
    """``catalog`` limited to ``schemas`` (a baseline may cover more than the runbook compares)."""
    if schemas is None:
        return catalog
    keep = set(schemas)

    def inside(name: str) -> bool:
        return name.split(".", 1)[0] in keep

    out = dict(catalog)
    out["schemas"] = [s for s in catalog.get("schemas", []) if s in keep]
    for section in ("tables", "sequences", "views", "routines"):
        out[section] = {k: v for k, v in catalog.get(section, {}).items() if inside(k)}
    return out


def without_triggers(catalog: dict[str, Any]) -> dict[str, Any]:
    """``catalog`` with every table's triggers removed (a copy)."""
    out = dict(catalog)
    out["tables"] = {name: {**t, "triggers": {}} for name, t in catalog.get("tables", {}).items()}
    return out


def unverifiable_triggers(baseline: dict[str, Any], ignore: Iterable[str] = ()) -> Finding | None:
    """A failed finding naming the baseline's triggers, for a session that cannot read triggers.

    MySQL and MariaDB list a trigger in ``information_schema`` only to a user
    holding the TRIGGER privilege, which also lets a single ``SET STATEMENT
    tx_read_only=0 FOR CREATE TRIGGER ...`` write: the validators' read-only
    user does not get it. Triggers then cannot be compared, and saying nothing
    would pass a restore that lost them; the runbook accepts that explicitly by
    listing them under ``schema.ignore``.
    """
    d = _Diff(ignore)
    names = [
        f"{table}.{trigger}"
        for table, t in sorted(baseline.get("tables", {}).items())
        for trigger in sorted(t.get("triggers", {}))
        if not d.ignored(f"{table}.{trigger}")
    ]
    if not names:
        return None
    detail = (
        f"{len(names)} trigger(s) in the baseline cannot be verified: MySQL/MariaDB show triggers only to users "
        "with the TRIGGER privilege, which the validators' read-only user must not hold (it can create triggers); "
        "list them under schema.ignore to accept that"
    )
    return Finding(VALIDATOR, "triggers", False, expected=names, actual="not readable", detail=detail)


class _Diff:
    """Collects findings while walking two catalogs."""

    def __init__(self, ignore: Iterable[str]) -> None:
        self.ignore = set(ignore)
        self.findings: list[Finding] = []

    def ignored(self, name: str) -> bool:
        # "public.orders", "orders", "public.orders.note" and "orders.note" all match
        parts = name.split(".")
        return any(".".join(parts[i:]) in self.ignore for i in range(len(parts)))

    def add(self, check: str, expected: Any, actual: Any, detail: str) -> None:
        self.findings.append(Finding(VALIDATOR, check, False, expected=expected, actual=actual, detail=detail))

    def presence(self, what: str, base: dict[str, Any], act: dict[str, Any]) -> list[str]:
        """Report missing/extra keys; return the names present in both."""
        for name in sorted(base.keys() - act.keys()):
            if not self.ignored(name):
                self.add(f"{what} {name}", "present", "missing", f"{what} {name} is in the baseline but not restored")
        for name in sorted(act.keys() - base.keys()):
            if not self.ignored(name):
                self.add(f"{what} {name}", "absent", "present", f"{what} {name} is restored but not in the baseline")
        return [n for n in sorted(base.keys() & act.keys()) if not self.ignored(n)]

    def fields(self, what: str, base: dict[str, Any], act: dict[str, Any]) -> None:
        """One finding per attribute that differs (type, nullable, default...)."""
        for key in sorted(base.keys() | act.keys()):
            if base.get(key) != act.get(key):
                self.add(
                    f"{what} {key}",
                    base.get(key),
                    act.get(key),
                    f"{what}: {key} changed from {base.get(key)!r} to {act.get(key)!r}",
                )


def _compare_table(d: _Diff, name: str, base: dict[str, Any], act: dict[str, Any]) -> None:
    for col in d.presence("column", _prefixed(name, base["columns"]), _prefixed(name, act["columns"])):
        short = col[len(name) + 1 :]
        d.fields(f"column {col}", base["columns"][short], act["columns"][short])
    if base.get("kind") != act.get("kind"):
        d.add(f"table {name} kind", base.get("kind"), act.get("kind"), "table kind changed")
    if base.get("primary_key") != act.get("primary_key"):
        d.add(
            f"primary key {name}",
            base.get("primary_key"),
            act.get("primary_key"),
            f"primary key of {name} differs",
        )
    for section, label in (
        ("unique", "unique constraint"),
        ("foreign_keys", "foreign key"),
        ("indexes", "index"),
        ("triggers", "trigger"),
    ):
        b, a = _prefixed(name, base.get(section, {})), _prefixed(name, act.get(section, {}))
        for obj in d.presence(label, b, a):
            if b[obj] != a[obj]:
                d.add(f"{label} {obj}", b[obj], a[obj], f"{label} {obj} is defined differently")


def _prefixed(table: str, objects: dict[str, Any]) -> dict[str, Any]:
    return {f"{table}.{k}": v for k, v in objects.items()}


def _count_objects(catalog: dict[str, Any]) -> dict[str, int]:
    tables = catalog.get("tables", {})
    return {
        "tables": len(tables),
        "columns": sum(len(t.get("columns", {})) for t in tables.values()),
        "indexes": sum(len(t.get("indexes", {})) for t in tables.values()),
        "sequences": len(catalog.get("sequences", {})),
        "views": len(catalog.get("views", {})),
        "routines": len(catalog.get("routines", {})),
    }


def compare(baseline: dict[str, Any], actual: dict[str, Any], *, ignore: Iterable[str] = ()) -> list[Finding]:
    """Findings for every difference between two catalogs; one passing finding if none.

    ``ignore`` holds object names to leave out: ``"orders"``,
    ``"public.orders"`` or ``"public.orders.note"`` (a column or index).
    """
    d = _Diff(ignore)
    b_tables, a_tables = baseline.get("tables", {}), actual.get("tables", {})
    for name in d.presence("table", b_tables, a_tables):
        _compare_table(d, name, b_tables[name], a_tables[name])
    for section, label in (("sequences", "sequence"), ("views", "view"), ("routines", "routine")):
        b, a = baseline.get(section, {}), actual.get(section, {})
        for name in d.presence(label, b, a):
            if b[name] != a[name]:
                d.add(f"{label} {name}", b[name], a[name], f"{label} {name} is defined differently")
    if d.findings:
        return d.findings
    counts = _count_objects(actual)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    return [Finding(VALIDATOR, "schema matches baseline", True, expected=counts, actual=counts, detail=summary)]
