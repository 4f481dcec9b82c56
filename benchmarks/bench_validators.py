"""Benchmark the validators on a database of millions of rows.

    python benchmarks/bench_validators.py --engine postgres --rows 5000000
    python benchmarks/bench_validators.py --engine mariadb --rows 2000000

Builds (or reuses, in ``--workdir``) a throwaway server and a database of
``--rows`` rows or more over 10+ tables -- PostgreSQL: ``pgbench -i`` (accounts
plus three small tables) and seven more tables from ``generate_series``;
MariaDB: ten tables from the ``seq_1_to_N`` engine -- then measures, each
``--repeat`` times (median reported, after one warm-up pass so every method
sees the same warm cache):

(a) ``run_validators`` with schema comparison and ``equals_baseline`` row
    counts on every table, ``--parallelism`` connections;
(b) a serial ``select count(*)`` per table over one connection;
(c) candidates for counting the same rows faster: parallel counts on 2 and 4
    connections, and one statement of scalar sub-queries (one round trip).
    Statistics-based estimates are printed for reference only: they are not
    exact, which is the point of a row count check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import start_mariadb, start_postgres  # noqa: E402

from validators.baseline import capture_baseline  # noqa: E402
from validators.config import RowCountRule, SchemaConfig, ValidatorsConfig  # noqa: E402
from validators.connect import connect  # noqa: E402
from validators.dbapi import fetch_all, fetch_one  # noqa: E402
from validators.dialects import count_sql, get_dialect  # noqa: E402
from validators.endpoint import Endpoint  # noqa: E402
from validators.pool import ConnectionPool, Task, run_tasks  # noqa: E402
from validators.runner import run_validators  # noqa: E402

DB = "bench"
# share of --rows in each extra table (PostgreSQL: on top of pgbench; MariaDB: all the rows)
PG_EXTRA = (0.1, 0.05, 0.05, 0.02, 0.02, 0.01, 0.01)
MARIA_TABLES = (0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01)


def _table_ddl(name: str, engine: str) -> str:
    ts = "timestamptz" if engine == "postgres" else "datetime"
    return f"create table {name} (id bigint primary key, k int not null, payload varchar(80), created_at {ts} not null)"


def _fill_sql(name: str, n: int, engine: str) -> str:
    if engine == "postgres":
        return (
            f"insert into {name} select g, g % 1000, md5(g::text), now() - g * interval '1 second'"
            f" from generate_series(1, {n}) g"
        )
    return f"insert into {name} select seq, seq % 1000, md5(seq), now() - interval seq second from seq_1_to_{n}"


def build(server: Any, engine: str, rows: int) -> Endpoint:
    """Create database ``bench`` unless a previous run built it with the same size."""
    ep = server.at(DB)
    try:
        marker = server.sql("select row_target from bench_meta", database=DB)
        if marker and int(marker[0][0]) == rows:
            print(f"reusing database {DB} ({rows:,} rows requested)")
            return ep  # type: ignore[no-any-return]
    except Exception as exc:  # no database yet: build it
        print(f"no reusable database: {type(exc).__name__}")
    print(f"building database {DB} with {rows:,}+ rows ...", flush=True)
    t0 = time.monotonic()
    server.run(f"drop database if exists {DB}", f"create database {DB}")
    if engine == "postgres":
        scale = max(1, rows // 100_000)
        env = {**os.environ, "PGPASSWORD": server.password}
        pgbench = server.cluster.bin.tool("pgbench")
        h, p, u = server.endpoint.host, str(server.endpoint.port), server.endpoint.user
        subprocess.run([pgbench, "-i", "-q", "-s", str(scale), "-h", h, "-p", p, "-U", u, DB], env=env, check=True)
        extra = PG_EXTRA
    else:
        extra = MARIA_TABLES
    for i, share in enumerate(extra, 1):
        name = f"extra_{i:02d}"
        server.run(_table_ddl(name, engine), _fill_sql(name, max(1, int(rows * share)), engine), database=DB)
    server.run("create table bench_meta (row_target bigint)", f"insert into bench_meta values ({rows})", database=DB)
    if engine == "postgres":
        server.run("vacuum analyze", database=DB)
    else:
        tables = [r[0] for r in server.sql("show tables", database=DB)]
        server.run(*(f"analyze table {t}" for t in tables), database=DB)
    print(f"built in {time.monotonic() - t0:.1f} s", flush=True)
    return ep  # type: ignore[no-any-return]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time in seconds over ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def serial_counts(ep: Endpoint, tables: list[str]) -> dict[str, int]:
    dialect = get_dialect(ep.engine)
    conn = connect(ep)
    try:
        return {t: int(fetch_one(conn, count_sql(dialect, t))[0]) for t in tables}  # type: ignore[index]
    finally:
        conn.close()


def parallel_counts(ep: Endpoint, tables: list[str], workers: int) -> dict[str, int]:
    dialect = get_dialect(ep.engine)

    def task(t: str) -> Task[int]:
        return Task(t, lambda conn: int(fetch_one(conn, count_sql(dialect, t))[0]))  # type: ignore[index]

    with ConnectionPool(ep) as pool:
        outcomes = run_tasks(pool, [task(t) for t in tables], workers)
    return {o.task.name: int(o.value or 0) for o in outcomes}


def one_statement(ep: Endpoint, tables: list[str]) -> dict[str, int]:
    dialect = get_dialect(ep.engine)
    sql = "select " + ", ".join(f"({count_sql(dialect, t)})" for t in tables)
    conn = connect(ep)
    try:
        row = fetch_one(conn, sql)
    finally:
        conn.close()
    return {t: int(n) for t, n in zip(tables, row or (), strict=True)}


def estimates(ep: Endpoint) -> int:
    sql = (
        "select sum(greatest(reltuples, 0))::bigint from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind = 'r' and n.nspname = 'public'"
        if ep.engine == "postgres"
        else f"select sum(table_rows) from information_schema.tables where table_schema = '{DB}'"
    )
    conn = connect(ep)
    try:
        return int(fetch_one(conn, sql)[0] or 0)  # type: ignore[index]
    finally:
        conn.close()


def measure(ep: Endpoint, tables: list[str], baseline: dict[str, Any], cfg: ValidatorsConfig, repeat: int) -> None:
    """Time (a), (b) and (c) on a warm cache and print seconds and ratios."""
    serial_counts(ep, tables)  # warm-up: every method below reads the same warm cache

    t_a, report = timed(lambda: run_validators(ep, cfg, params={}, baseline=baseline), repeat)
    assert report.passed, [f for f in report.findings if not f.passed]
    t_b, serial = timed(lambda: serial_counts(ep, tables), repeat)
    assert serial == baseline["row_counts"]
    candidates = {
        "parallel counts, 2 connections": lambda: parallel_counts(ep, tables, 2),
        "parallel counts, 4 connections": lambda: parallel_counts(ep, tables, 4),
        "one statement of sub-queries": lambda: one_statement(ep, tables),
    }
    results: dict[str, float] = {}
    for name, fn in candidates.items():
        results[name], counts = timed(fn, repeat)
        assert counts == baseline["row_counts"], name
    t_est, est = timed(lambda: estimates(ep), repeat)

    print(f"{'method':<46}{'seconds':>9}{'vs serial':>11}")
    print(f"{'(a) run_validators (schema + counts)':<46}{t_a:>9.3f}{t_b / t_a:>10.2f}x")
    print(f"{'    sum of per-check durations':<46}{sum(f.duration_ms or 0 for f in report.findings) / 1000:>9.3f}")
    print(f"{'(b) serial count(*) per table, 1 connection':<46}{t_b:>9.3f}{1:>10.2f}x")
    for name, t in results.items():
        print(f"{'(c) ' + name:<46}{t:>9.3f}{t_b / t:>10.2f}x")
    print(f"{'    estimate (not exact: ' + format(est, ',') + ' rows)':<46}{t_est:>9.3f}{t_b / t_est:>10.1f}x")
    exact = {"(b) serial count(*)": t_b, **{f"(c) {k}": v for k, v in results.items()}}
    best = min(exact, key=exact.__getitem__)
    print(
        f"\nfastest exact count: {best} ({exact[best]:.3f} s, {t_b / exact[best]:.2f}x serial);"
        f" run_validators / serial = {t_a / t_b:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["postgres", "mariadb"], default="postgres")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--workdir", type=Path, default=None, help="reused between runs (default /tmp/rd-bench-ENGINE)")
    ap.add_argument("--parallelism", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    workdir = (a.workdir or Path(f"/tmp/rd-bench-{a.engine}")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    if a.engine == "postgres":
        server: Any = start_postgres(workdir, settings={"shared_buffers": "1GB", "max_wal_size": "4GB"})
    else:
        server = start_mariadb(workdir, extra_args=["--innodb-buffer-pool-size=1G"])
    try:
        ep = build(server, a.engine, a.rows)
        dialect = get_dialect(ep.engine)
        conn = connect(ep)
        schemas = ["public"] if ep.engine == "postgres" else [DB]
        try:
            tables = [
                f"{s}.{t}"
                for s, t, _ in fetch_all(
                    conn, dialect.catalog_sql["tables"], {"schemas": dialect.schemas_param(schemas)}
                )
            ]
        finally:
            conn.close()
        t0 = time.perf_counter()
        baseline = capture_baseline(ep, schemas, parallelism=a.parallelism)
        t_baseline = time.perf_counter() - t0
        total = sum(baseline["row_counts"].values())
        print(f"{a.engine}: {len(tables)} tables, {total:,} rows; baseline captured in {t_baseline:.2f} s")
        print(f"cores: {os.cpu_count()}, parallelism {a.parallelism}, median of {a.repeat}\n")

        cfg = ValidatorsConfig(
            schema=SchemaConfig(baseline=workdir / "unused.json", schemas=tuple(schemas)),
            row_counts={t: RowCountRule(equals_baseline=True) for t in tables},
            parallelism=a.parallelism,
        )
        measure(ep, tables, baseline, cfg, a.repeat)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
