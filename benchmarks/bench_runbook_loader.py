"""How fast the runbook loader refuses hostile documents (issue 8: billion laughs refused in under a second).

Run: .venv/bin/python benchmarks/bench_runbook_loader.py

Each case is loaded 5 times with `load_runbook`; the median and worst wall time of the refusal
are printed. The unit tests only check that each is refused with its line; the speed is here,
where a loaded machine cannot make a test flake.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile_yaml import BASE, DEEP_NESTING, OVER_CAP, laughs  # noqa: E402

from drills.errors import RunbookError  # noqa: E402
from drills.runbook import load_runbook  # noqa: E402

CASES = {
    "billion laughs (9x9 anchors)": BASE + laughs(),
    "20,000-deep nesting": DEEP_NESTING,
    "file over the 1 MiB cap": OVER_CAP,
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in CASES.items():
            path = Path(tmp) / "rb.yaml"
            path.write_text(text)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                try:
                    load_runbook(path, check_paths=False)
                except RunbookError:
                    pass
                else:
                    raise SystemExit(f"{name}: accepted")
                times.append(time.perf_counter() - start)
            print(
                f"{name:<30} refused in median {statistics.median(times) * 1000:7.1f} ms, "
                f"worst {max(times) * 1000:7.1f} ms"
            )


if __name__ == "__main__":
    main()
