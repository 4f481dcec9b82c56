"""A real PostgreSQL source for the corruption corpus: 1 MiB WAL segments, one batch of commits per segment.

Plays production once per session: ``initdb --wal-segsize=1`` (so every check must read the
segment size from the backup, not assume 16 MiB), WAL archiving, a plain and a tar base backup,
then ``BATCHES`` batches of rows, each committed in its own transaction and followed by
``pg_switch_wal()``, so each batch lives in a segment of its own. Tests copy the folder and damage
the copy: a missing, truncated, zeroed, renamed or foreign segment, an edited base backup file.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from drills.clock import iso
from drills.demo.postgres import archiving_options
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.engines.postgres.wal import segment_name, split_name
from drills.osutil import free_port

__all__ = ["BATCHES", "BATCH_ROWS", "CorpusSource", "build_corpus_source", "copy_corpus", "runbook_text"]

BATCHES = 6
BATCH_ROWS = 3000
SEG_PER_ID = 0x1000  # 1 MiB segments: 4096 per 4 GiB "log id"


@dataclass(frozen=True)
class CorpusSource:
    root: Path
    commit_times: list[datetime]  # one per batch, in order
    batch_segments: list[str]  # the segment each batch's commit lives in
    start_segment: str  # the segment the base backup starts in

    def target_after(self, batches: int) -> datetime:
        """A time between the commit of batch ``batches`` and the next one."""
        a, b = self.commit_times[batches - 1], self.commit_times[batches]
        return a + (b - a) / 2


def _sql(src: PgCluster, sql: str) -> str:
    proc = subprocess.run(
        [src.bin.tool("psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", src.conninfo("shop"), "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def build_corpus_source(root: Path) -> CorpusSource:
    bins = find_pg_binaries()
    wal = root / "wal"
    wal.mkdir(parents=True)
    run_as = run_as_for_server()
    if run_as is not None:
        shutil.chown(wal, run_as.uid, run_as.gid)
    src = PgCluster(bins, root / "src" / "data", root / "src" / "sock", free_port(), run_as, root / "src" / "log")
    (root / "src").mkdir()
    (root / "src").chmod(0o755)
    src.initdb(extra=["--wal-segsize=1"])
    src.start(wait=True, options=archiving_options(wal))
    try:
        subprocess.run(
            [bins.tool("createdb"), "-h", str(src.socket_dir), "-p", str(src.port), "-U", "postgres", "shop"],
            check=True,
        )
        _sql(
            src,
            "create table events (id bigserial primary key, batch int not null, "
            "at timestamptz not null default clock_timestamp())",
        )
        for fmt, out in (("p", "base"), ("t", "base-tar")):
            subprocess.run(
                [bins.tool("pg_basebackup"), "-h", str(src.socket_dir), "-p", str(src.port), "-U", "postgres",
                 "-D", str(root / out), "-F", fmt, "-X", "none", "-c", "fast", "-l", f"corpus {out}"],
                check=True, capture_output=True,
            )  # fmt: skip
        label = (root / "base" / "backup_label").read_text()
        start = label.split("(file ")[1].split(")")[0]
        times: list[datetime] = []
        segments: list[str] = []
        for b in range(1, BATCHES + 1):
            seg = _sql(src, "select pg_walfile_name(pg_current_wal_insert_lsn())")
            at = _sql(
                src,
                f"insert into events (batch) select {b} from generate_series(1, {BATCH_ROWS}); "
                "select max(at) from events",
            )
            times.append(datetime.fromisoformat(at.replace(" ", "T") + ("" if "+" in at else "+00:00")))
            segments.append(seg)
            time.sleep(0.05)
            _sql(src, "select pg_switch_wal()")
        last = _sql(src, "select pg_walfile_name(pg_current_wal_insert_lsn())")
        tli, n = split_name(last, SEG_PER_ID)
        _wait_archived(src, segment_name(tli, n - 1, SEG_PER_ID))
    finally:
        src.stop()
    shutil.rmtree(root / "src")
    return CorpusSource(root, times, segments, start)


def _wait_archived(src: PgCluster, segment: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _sql(src, "select coalesce(last_archived_wal, '') from pg_stat_archiver") >= segment:
            return
        time.sleep(0.05)
    raise RuntimeError("the corpus source did not archive its WAL in time")


def runbook_text(target: str, rows: int | None, *, base: str = "base", verify: str = "headers") -> str:
    counts = f"events: {{equals: {rows}}}" if rows is not None else "events: {min: 1}"
    return f"""name: corpus-pitr
source:
  kind: postgres-pitr
  base_backup: {base}
  wal_archive: wal
  target_time: {target}
  database: shop
  verify: {verify}
objectives: {{rto_seconds: 120}}
validators:
  row_counts: {{{counts}}}
  freshness: {{column: events.at}}
evidence: {{dir: evidence}}
"""


def copy_corpus(src: CorpusSource, dest: Path, target: datetime | str, rows: int | None, **kw: str) -> Path:
    """A private copy of the corpus with a runbook; the copy keeps the archive's owners and modes."""
    subprocess.run(["cp", "-a", str(src.root), str(dest)], check=True)  # owners and modes as the source left them
    dest.chmod(0o755)
    text = runbook_text(iso(target) if isinstance(target, datetime) else target, rows, **kw)
    (dest / "runbook.yaml").write_text(text)
    return dest / "runbook.yaml"
