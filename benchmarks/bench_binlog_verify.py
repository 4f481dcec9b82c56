"""What verifying a MariaDB binlog chain costs, against reading the same files.

Builds a source MariaDB (``log_bin``, ``binlog_format=ROW``, ``binlog_checksum=CRC32``,
``max_binlog_size=32M``) and writes about ``--mb`` MB of binary logs with a server-side
procedure: many small transactions (one order row with a ~150-byte note, committed alone),
every tenth one an update of an earlier row, like an OLTP workload. Then, page cache warm,
each method reads the whole chain ``--repeat`` times, rotating which goes first:

* ``cat``: ``cat FILES > /dev/null``, the floor.
* ``scan``: :func:`drills.engines.mariadb.binlog.inspect_chain`, what preflight runs: every
  event header and its CRC-32, in Python.
* ``mariadb-binlog --verify-binlog-checksum``: the same files decoded and checked by the server's
  own tool, output to ``/dev/null``.
* ``mariadb-binlog``: the same without ``--verify-binlog-checksum`` (the decoding alone).
* ``tracker``: :class:`~drills.engines.mariadb.binlog.ReplayTracker` fed the tool's output in
  1 MiB chunks: what following a replay costs on top of the replay.
* ``preflight``: :func:`~drills.engines.mariadb.backup.tool_pass` after the scan, as a drill's
  preflight runs them (one mariadb-binlog per file, as the server's user).

With ``--replay`` it also replays the whole chain into a fresh server ``--repeat`` times each
way: ``mariadb-binlog | mariadb`` as a shell pipe, and through the drill's own pipe (the stream
passes through the tracker in Python). That is the restore-phase cost of the replay proof.

    .venv/bin/python benchmarks/bench_binlog_verify.py [--mb 100] [--repeat 5] [--replay] [--workdir DIR] [--keep]

Prints the median and minimum per method and each one's ratio to ``cat`` (to the shell pipe for
the replay).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.engines.mariadb.backup import as_user, tool_pass, utc_env  # noqa: E402
from drills.engines.mariadb.binlog import inspect_chain  # noqa: E402
from drills.engines.mariadb.plan import plan_replay  # noqa: E402
from drills.engines.mariadb.replay import ReplayTracker, pipe  # noqa: E402
from drills.engines.mariadb.server import MariaServer, find_maria_binaries, run_as_for_mariadb  # noqa: E402
from drills.osutil import os_user, private_dir  # noqa: E402

SHELL, DRILL = "mariadb-binlog | mariadb (shell pipe)", "drill pipe + tracker"

PROC = """
create procedure fill(n int)
begin
  declare i int default 0;
  while i < n do
    start transaction;
    insert into orders (customer_id, total_cents, note) values (i % 997, i * 7 % 50000, repeat(md5(i), 5));
    if i % 10 = 9 then
      update orders set status = 'paid' where id = greatest(501, last_insert_id()) - 500;
    end if;
    commit;
    set i = i + 1;
  end while;
end
"""


def build(workdir: Path, mb: int) -> tuple[Path, list[Path]]:
    bins = find_maria_binaries(need=("binlog",))
    run_as = run_as_for_mariadb()
    server = MariaServer(bins, workdir / "source", run_as)
    binlogs = private_dir(workdir / "source" / "binlogs", run_as)
    server.install_db()
    server.start(
        [
            f"--log-bin={binlogs / 'mysql-bin'}",
            "--server-id=1",
            "--binlog-format=ROW",
            "--binlog-checksum=CRC32",
            "--max-binlog-size=32M",
            "--sync-binlog=0",
            "--innodb-flush-log-at-trx-commit=0",
        ]
    )
    try:
        server.wait_accepting(60)
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("create database bench")
            cur.execute("use bench")
            cur.execute(
                "create table orders (id int unsigned primary key auto_increment, customer_id int not null, "
                "status enum('new','paid') not null default 'new', total_cents int not null, note varchar(200), "
                "created_at datetime(6) not null default current_timestamp(6))"
            )
            cur.execute(PROC)
            total = 0
            while total < mb << 20:
                cur.execute("call fill(20000)")
                total = sum(p.stat().st_size for p in binlogs.glob("mysql-bin.[0-9]*"))
                print(f"  binlogs: {total / 2**20:.0f} MB", file=sys.stderr)
    finally:
        server.stop()
    files = sorted(binlogs.glob("mysql-bin.[0-9]*"))
    return binlogs, files


def replay(wd: Path, binlogs: Path, files: list[Path], repeat: int) -> dict[str, list[float]]:
    """The whole chain into a fresh server, each way, ``repeat`` times (the bench database dropped between)."""
    bins = find_maria_binaries(need=("binlog",))
    run_as = run_as_for_mariadb()
    server = MariaServer(bins, wd / "target", run_as)
    server.install_db()
    server.start(["--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"])
    times: dict[str, list[float]] = {SHELL: [], DRILL: []}
    try:
        server.wait_accepting(60)
        reader = [bins.tool("binlog"), "--no-defaults", "--verify-binlog-checksum", *map(str, files)]
        client = [bins.tool("client"), "--no-defaults", f"--socket={server.socket}", f"--user={os_user()}"]
        client += ["--binary-mode", "--max-allowed-packet=1G", "--batch"]
        plan = plan_replay(inspect_chain(binlogs, files[0].name, 4), None, 0)

        def shell() -> None:
            with subprocess.Popen(reader, stdout=subprocess.PIPE, env=utc_env(), **as_user(run_as)) as r:
                subprocess.run(client, stdin=r.stdout, check=True)
            assert r.returncode == 0

        def drill_pipe() -> None:
            tracker = ReplayTracker(plan.files, 4)
            piped = pipe(reader, client, tracker, server.log_dir, 3600, run_as=run_as)
            assert piped.reader_rc == 0 and piped.client_rc == 0, piped
            assert tracker.shortfall(plan) is None

        ways = {SHELL: shell, DRILL: drill_pipe}
        order = list(ways)
        for r in range(repeat):
            for name in order[r % 2 :] + order[: r % 2]:
                with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
                    cur.execute("drop database if exists bench")
                times[name].append(timed(ways[name]))
                print(f"  replay {name}: {times[name][-1]:.1f}s", file=sys.stderr)
    finally:
        server.stop()
    return times


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_methods(binlogs: Path, files: list[Path]) -> dict[str, Callable[[], None]]:
    """Each way of reading the whole chain, as a no-argument callable."""
    tool = find_maria_binaries(need=("binlog",)).tool("binlog")
    names = [str(f) for f in files]

    def cat() -> None:
        subprocess.run(["cat", *names], stdout=subprocess.DEVNULL, check=True)

    def scan() -> None:
        chain = inspect_chain(binlogs, files[0].name, 4)
        assert chain.broken is None, chain.broken

    def tool_verify() -> None:
        args = [tool, "--no-defaults", "--verify-binlog-checksum", *names]
        subprocess.run(args, stdout=subprocess.DEVNULL, env=utc_env(), check=True)

    def tool_plain() -> None:
        subprocess.run([tool, "--no-defaults", *names], stdout=subprocess.DEVNULL, env=utc_env(), check=True)

    def tracker() -> None:
        t = ReplayTracker([f.name for f in files], 4)
        with subprocess.Popen([tool, "--no-defaults", *names], stdout=subprocess.PIPE, env=utc_env()) as p:
            assert p.stdout is not None
            while chunk := p.stdout.read(1 << 20):
                t.feed(chunk)
        assert len(t.seen) == len(files)

    def preflight() -> None:
        plan = plan_replay(inspect_chain(binlogs, files[0].name, 4), None, 0)
        tool_pass(tool, binlogs, plan, run_as_for_mariadb(), 3600)

    return {
        "cat": cat,
        "scan (headers + CRC32, Python)": scan,
        "mariadb-binlog --verify-binlog-checksum": tool_verify,
        "mariadb-binlog (no verify)": tool_plain,
        "mariadb-binlog | tracker": tracker,
        "preflight (scan + mariadb-binlog per file)": preflight,
    }


def table(title: str, times: dict[str, list[float]], base_name: str, unit: str) -> None:
    base = statistics.median(times[base_name])
    print(f"{title:44} {'median s':>9} {'min s':>8} {unit:>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:44} {med:9.3f} {min(ts):8.3f} {med / base:8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--replay", action="store_true", help="also time replaying the chain, shell pipe vs the drill's")
    a = ap.parse_args()
    wd = a.workdir or Path(tempfile.mkdtemp(prefix="bench-binlog-", dir="/var/tmp"))
    wd.chmod(0o755)
    try:
        binlogs = wd / "source" / "binlogs"
        files = sorted(binlogs.glob("mysql-bin.[0-9]*")) if binlogs.is_dir() else []
        if not files:
            binlogs, files = build(wd, a.mb)
        size = sum(f.stat().st_size for f in files)
        methods = read_methods(binlogs, files)
        methods["cat"]()  # warm the page cache
        times: dict[str, list[float]] = {k: [] for k in methods}
        order = list(methods)
        for r in range(a.repeat):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                times[name].append(timed(methods[name]))
        print(f"{len(files)} binlog files, {size / 2**20:.1f} MB, {a.repeat} rounds, warm cache")
        table("reading the chain", times, "cat", "x cat")
        if a.replay:
            table("replay of the whole chain", replay(wd, binlogs, files, a.repeat), SHELL, "x pipe")
    finally:
        if not a.keep and a.workdir is None:
            shutil.rmtree(wd, ignore_errors=True)
        elif a.keep:
            print(f"kept {wd}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
