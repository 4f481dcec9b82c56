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

from signed_chains import SUBJECTS, predicate, sign_chains  # noqa: E402

from drills.evidence import generate_keypair, load_signer, load_verifiers  # noqa: E402
from drills.evidence.chain import scan  # noqa: E402
from drills.history import PastDrill, append_drill  # noqa: E402


def main(argv: list[str] | None = None) -> int:
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
        for _ in sign_chains(ev, signer, args.runbooks, args.per_runbook):
            pass
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
                return predicate("rb000", n, None) | trail

            append_drill(ev, "rb000", verifiers, signer, complete, run_id=f"rb000-{n:05d}", subjects=SUBJECTS)

        app = timed(append)
        for label, xs in (("scan all", all_), ("scan one", one), ("append", app)):
            print(f"{label:<9} median {statistics.median(xs) * 1000:8.1f} ms  worst {max(xs) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
