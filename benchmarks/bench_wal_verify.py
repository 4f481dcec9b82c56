"""WAL page-header verification against simply reading the same files.

Builds a real WAL archive of about ``--gib`` GiB (a PostgreSQL cluster archiving into a directory
while it inserts rows), warms the page cache, then times side by side, ``--repeat`` times with
alternating order:

* ``cat``: ``cat SEGMENTS > /dev/null``, the floor: reading the bytes and nothing else;
* ``scan``: :func:`drills.engines.postgres.wal.scan_segment` over every segment, as preflight does
  (size, magic, ``xlp_pageaddr``, timeline and flags of every page);
* ``pg_waldump`` (once, for reference): what ``verify: full`` adds by reading every record.

Goal: median scan <= 1.2 x median cat.

    .venv/bin/python benchmarks/bench_wal_verify.py [--gib 1.0] [--repeat 7] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.demo.postgres import archiving_options  # noqa: E402
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server  # noqa: E402
from drills.engines.postgres.wal import WalFile, WalGeometry, geometry_of, scan_segment, split_name  # noqa: E402
from drills.osutil import free_port  # noqa: E402

GOAL_RATIO = 1.2


def _psql(c: PgCluster, sql: str) -> str:
    out = subprocess.run(
        [c.bin.tool("psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", c.conninfo("postgres"), "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def build_archive(root: Path, gib: float) -> Path:
    """A real archive: insert rows until the archived WAL reaches the size asked for."""
    bins = find_pg_binaries()
    run_as = run_as_for_server()
    wal = root / "wal"
    wal.mkdir(parents=True)
    if run_as is not None:
        shutil.chown(wal, run_as.uid, run_as.gid)
    (root / "src").mkdir()
    (root / "src").chmod(0o755)
    c = PgCluster(bins, root / "src" / "data", root / "src" / "sock", free_port(), run_as, root / "src" / "log")
    c.initdb()
    c.start(wait=True, options={**archiving_options(wal), "max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'"})
    try:
        _psql(c, "create table pad (id bigint, filler text)")
        want = int(gib * (1 << 30))
        while sum(f.stat().st_size for f in wal.iterdir()) < want:
            _psql(c, "insert into pad select g, repeat('x', 80) from generate_series(1, 1000000) g")
            time.sleep(0.5)
        last = _psql(c, "select pg_walfile_name(pg_current_wal_insert_lsn())")
        _psql(c, "select pg_switch_wal()")
        deadline = time.monotonic() + 120
        while _psql(c, "select coalesce(last_archived_wal, '') from pg_stat_archiver") < last:
            if time.monotonic() > deadline:
                raise RuntimeError("archiving did not catch up")
            time.sleep(0.1)
        sysid = int(_psql(c, "select system_identifier from pg_control_system()"))
    finally:
        c.stop()
    (root / "sysid").write_text(str(sysid))
    return wal


def scan_all(wal: Path, names: list[str], major: int, sysid: int) -> None:
    head = (wal / names[0]).read_bytes()[:64]
    geo = geometry_of(head, major, sysid)
    if not isinstance(geo, WalGeometry):
        raise SystemExit(f"{names[0]}: {geo.problem}")
    buf = bytearray(geo.segment_size)
    for n in names:
        st = os.stat(wal / n)
        tli, num = split_name(n, geo.segments_per_id)
        f = WalFile(n, tli, num, st.st_size, st.st_mode, st.st_uid, st.st_gid)
        defect = scan_segment(str(wal / n), f, geo, buf)
        if defect is not None:
            raise SystemExit(f"unexpected defect in a clean archive: {defect}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    root = a.workdir or Path(tempfile.mkdtemp(prefix="bench-wal-"))
    root.chmod(0o755)
    try:
        wal = root / "wal"
        if not wal.exists():
            print(f"building a {a.gib} GiB WAL archive in {root} …", file=sys.stderr)
            build_archive(root, a.gib)
        names = sorted(n for n in os.listdir(wal) if len(n) == 24)
        total = sum((wal / n).stat().st_size for n in names)
        major = find_pg_binaries().major
        sysid = int((root / "sysid").read_text())
        paths = [str(wal / n) for n in names]
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        def cat() -> None:
            subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)

        def scan() -> None:
            scan_all(wal, names, major, sysid)

        times: dict[str, list[float]] = {"cat": [], "scan": []}
        for i in range(a.repeat):
            order = [("cat", cat), ("scan", scan)] if i % 2 == 0 else [("scan", scan), ("cat", cat)]
            for name, fn in order:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(
            [find_pg_binaries().tool("pg_waldump"), "--quiet", "--path", str(wal), names[0], names[-1]],
            capture_output=True,
            check=False,
        )
        waldump = time.perf_counter() - t0
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["scan"] / med["cat"]
        print(f"archive: {len(names)} segments, {total / 2**30:.2f} GiB, PostgreSQL {major}, warm page cache")
        print(f"{'method':<12} {'median s':>9} {'min s':>8} {'GiB/s':>7}")
        for k, v in times.items():
            print(f"{k:<12} {med[k]:9.3f} {min(v):8.3f} {total / 2**30 / med[k]:7.2f}")
        print(
            f"{'pg_waldump':<12} {waldump:9.3f} {'':>8} {total / 2**30 / waldump:7.2f}   (once: what verify: full adds)"
        )
        print(f"ratio scan/cat (median): {ratio:.2f}  goal <= {GOAL_RATIO}")
        return 0 if ratio <= GOAL_RATIO else 1
    finally:
        if not a.keep and a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
