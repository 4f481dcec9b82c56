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
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from drills.errors import RunbookError  # noqa: E402
from drills.runbook import load_runbook  # noqa: E402

BASE = textwrap.dedent(
    """\
    name: shop
    source: {kind: postgres-dump, archive: shop.dump}
    objectives: {rto_seconds: 600, rpo_seconds: 60}
    """
)


def laughs(levels: int = 9, width: int = 9) -> str:
    rows = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


CASES = {
    "billion laughs (9x9 anchors)": BASE + laughs(),
    "20,000-deep nesting": BASE + "tags: " + "[" * 20000 + "]" * 20000 + "\n",
    "file over the 1 MiB cap": BASE + "#" + "x" * (1 << 20) + "\n",
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
