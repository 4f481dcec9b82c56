"""CLI start-up time: ``drill --help`` and ``drill validate RUNBOOK`` as a user runs them.

Each command runs ``--repeat`` times (default 10) as a fresh subprocess;
min and median wall time are printed. Goal: median <= 0.3 s for both.

The runbook is the first ``runbooks/*.yaml`` that validates on this machine
(or ``--runbook FILE``); when none does (examples name production paths
such as ``/backups/...``), the demo runbook text is written into a temp dir
together with the files it names (an empty base backup and WAL archive, a
baseline and a key pair), so ``validate`` checks real paths without a
database.

Then ``python -X importtime`` of ``import drills.cli`` and of ``drill validate`` shows the ten largest
cumulative imports and whether boto3, botocore, psycopg or pymysql were
imported at all (they must not be: they are loaded by the commands that
need them).

    .venv/bin/python benchmarks/bench_startup.py [--repeat 10] [--runbook FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 0.3
HEAVY = ("boto3", "botocore", "psycopg", "pymysql")


def drill_exe() -> list[str]:
    exe = Path(sys.executable).parent / "drill"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "drills.cli"]


def example_runbook(tmp: Path) -> Path:
    """The first repo runbook that validates here, else the demo runbook with every path it names present."""
    found = sorted((REPO / "runbooks").glob("*.yaml")) + sorted((REPO / "runbooks").glob("*.yml"))
    for rb in found:  # examples name production paths (/backups/...) that may not exist on this machine
        if subprocess.run([*drill_exe(), "validate", str(rb)], capture_output=True, check=False).returncode == 0:
            return rb
    sys.path.insert(0, str(REPO))
    from drills.demo.postgres import _runbook_text

    for d in ("backups/base", "backups/wal", "baselines", "keys", "evidence"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "baselines" / "shop.json").write_text("{}\n")
    key = tmp / "keys" / "drill.key"
    subprocess.run([*drill_exe(), "keygen", "--out", str(key)], check=True, capture_output=True)
    rb = tmp / "runbook.yaml"
    rb.write_text(_runbook_text(datetime(2024, 1, 1, 12, 0, tzinfo=UTC), 5020, 20))
    return rb


def time_cmd(args: list[str], repeat: int) -> list[float]:
    subprocess.run(args, check=True, capture_output=True)  # warm the page cache and .pyc files
    out: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def importtime(args: list[str], top: int = 10) -> tuple[list[tuple[int, int, str]], set[str]]:
    """(cumulative us, self us, name) of the ``top`` largest imports, and the heavy packages imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    rows: list[tuple[int, int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = (p.strip() for p in line.removeprefix("import time:").split("|"))
        rows.append((int(cum_us), int(self_us), name))
    heavy = {r[2].strip().split(".")[0] for r in rows if r[2].strip().split(".")[0] in HEAVY}
    return sorted(rows, reverse=True)[:top], heavy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time `drill --help` and `drill validate`")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument(
        "--runbook", type=Path, help="runbook for `drill validate` (default: runbooks/*.yaml or the demo's)"
    )
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        rb = a.runbook or example_runbook(tmp)
        exe = drill_exe()
        cases = {"drill --help": [*exe, "--help"], f"drill validate {rb.name}": [*exe, "validate", str(rb)]}
        print(f"runbook: {rb}\n")
        print(f"{'command':40} {'min s':>8} {'median':>8}   (n={a.repeat}, goal median <= {GOAL_S}s)")
        ok = True
        for label, args in cases.items():
            ts = time_cmd(args, a.repeat)
            med = statistics.median(ts)
            ok &= med <= GOAL_S
            print(f"{label:40} {min(ts):8.3f} {med:8.3f}   {'OK' if med <= GOAL_S else 'OVER GOAL'}")
        baseline = time_cmd([sys.executable, "-c", "pass"], a.repeat)
        print(f"{'(python -c pass, for reference)':40} {min(baseline):8.3f} {statistics.median(baseline):8.3f}")

        any_heavy = False
        for what, args in (
            ("-c 'import drills.cli'", ["-c", "import drills.cli"]),
            (f"-m drills.cli validate {rb.name}", ["-m", "drills.cli", "validate", str(rb)]),
        ):
            top, heavy = importtime(args)
            any_heavy |= bool(heavy)
            print(f"\npython -X importtime {what}: top 10 cumulative")
            print(f"{'cumulative ms':>14} {'self ms':>8}  module")
            for cum, self_, name in top:
                print(f"{cum / 1000:14.1f} {self_ / 1000:8.1f}  {name.rstrip()}")
            print(f"heavy imports ({', '.join(HEAVY)}): {', '.join(sorted(heavy)) or 'none'}")
        return 0 if ok and not any_heavy else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
