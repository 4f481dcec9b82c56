"""What appending one record costs when the evidence directory is shared by a fleet.

Signs ``--runbooks`` x ``--per-runbook`` records into one directory (each runbook its own linear
chain, written with the real ``write_evidence``), then times, ``--repeat`` times:

* ``scan all``: verifying every record in the directory, what each append did before it filtered;
* ``scan one``: ``scan(..., runbook=X)``, what ``append_drill`` verifies now (X's records, and any
  file that claims X or claims nothing);
* ``append``: one whole ``append_drill`` (lock, scan, link, sign, write, head) for runbook X.

    .venv/bin/python benchmarks/bench_chain_append.py [--runbooks 20] [--per-runbook 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.evidence import generate_keypair, load_signer, load_verifiers, write_evidence  # noqa: E402
from drills.evidence.chain import scan  # noqa: E402
from drills.evidence.statement import subject_for_bytes  # noqa: E402
from drills.history import PastDrill, append_drill  # noqa: E402

SUBJECTS = [subject_for_bytes("runbook", b"name: x\n")]
FINDINGS = [
    {"validator": "row_counts", "check": f"table_{i} rows", "passed": True, "expected": ">= 1000", "actual": 1200 + i,
     "detail": "counted with count(*) under a read-only role", "duration_ms": 12}
    for i in range(25)
]  # fmt: skip


def _predicate(runbook: str, n: int, prev: str | None) -> dict[str, Any]:
    at = f"2026-{1 + n // 28 % 12:02d}-{1 + n % 28:02d}T02:00:00.000Z"
    return {
        "drill": {"id": f"{runbook}-{n:05d}", "started_at": at, "finished_at": at},
        "runbook": {"name": runbook},
        "results": {"verdict": "passed", "achieved_rto_ms": 600_000 + n, "rto_objective_ms": 1_800_000},
        "chain": {"id": f"runbook:{runbook}", "seq": n, "prev_envelope_sha256": prev},
    }


def main(argv: list[str] | None = None) -> int:
    import hashlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runbooks", type=int, default=20)
    ap.add_argument("--per-runbook", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_keypair(root / "drill.key")
        signer, verifiers = load_signer(root / "drill.key"), load_verifiers(root / "drill.pub")
        ev = root / "evidence"
        t = time.monotonic()
        for r in range(args.runbooks):
            prev = None
            for n in range(1, args.per_runbook + 1):
                name = f"rb{r:03d}"
                pred = _predicate(name, n, prev) | {"findings": FINDINGS}  # a real record's size (~6 KB)
                path = write_evidence(pred, SUBJECTS, ev, f"{name}-{n:05d}", signer)
                prev = hashlib.sha256(path.read_bytes()).hexdigest()
        total = args.runbooks * args.per_runbook
        print(f"{total} records ({args.runbooks} runbooks x {args.per_runbook}) signed in {time.monotonic() - t:.1f}s")

        def timed(fn: Any) -> list[float]:
            out = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            return out

        all_ = timed(lambda: scan(ev, verifiers))
        one = timed(lambda: scan(ev, verifiers, runbook="rb000"))
        counter = iter(range(args.per_runbook + 1, args.per_runbook + 1 + args.repeat))

        def append() -> None:
            n = next(counter)

            def complete(_past: list[PastDrill], trail: dict[str, Any]) -> dict[str, Any]:
                return _predicate("rb000", n, None) | trail

            append_drill(ev, "rb000", verifiers, signer, complete, run_id=f"rb000-{n:05d}", subjects=SUBJECTS)

        app = timed(append)
        for label, xs in (("scan all", all_), ("scan one", one), ("append", app)):
            print(f"{label:<9} median {statistics.median(xs) * 1000:8.1f} ms  worst {max(xs) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
