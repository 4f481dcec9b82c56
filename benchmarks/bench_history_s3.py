"""What ``drill history --evidence-s3`` costs, first and second time, on moto S3.

Signs ``--runbooks`` x ``--per-runbook`` chained records (each runbook its own linear chain, a real
record's size, written with the real ``write_evidence``), pushes each with the real ``S3Store.push``
(Object Lock, checksum, conditional put) to a moto bucket, then reads the history twice with
``read_s3_history`` and a fresh cache directory: S3 calls made (counted by the client that routes
them through ``AwsCaller``), objects downloaded, wall time. Goal: the second read downloads nothing
and makes one ``ListObjectVersions`` call per 1000 versions.

    .venv/bin/python benchmarks/bench_history_s3.py [--runbooks 10] [--per-runbook 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.evidence import generate_keypair, load_signer, load_verifiers, write_evidence  # noqa: E402
from drills.evidence.statement import subject_for_bytes  # noqa: E402

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
        "findings": FINDINGS,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runbooks", type=int, default=10)
    ap.add_argument("--per-runbook", type=int, default=100)
    args = ap.parse_args(argv)
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    import boto3
    from moto import mock_aws

    from drills.aws.clients import aws_client
    from drills.evidence.s3 import S3Store
    from drills.ledger import read_s3_history

    with tempfile.TemporaryDirectory() as tmp, mock_aws():
        root = Path(tmp)
        generate_keypair(root / "drill.key")
        signer, verifiers = load_signer(root / "drill.key"), load_verifiers(root / "drill.pub")
        boto3.client("s3").create_bucket(Bucket="bench-evidence", ObjectLockEnabledForBucket=True)
        store = S3Store("bench-evidence", "drills/", 30, None, client=aws_client("s3"))
        t = time.monotonic()
        for r in range(args.runbooks):
            prev = None
            for n in range(1, args.per_runbook + 1):
                name = f"rb{r:03d}"
                path = write_evidence(_predicate(name, n, prev), SUBJECTS, root / "ev", f"{name}-{n:05d}", signer)
                prev = hashlib.sha256(path.read_bytes()).hexdigest()
                assert store.push(path, name, f"{name}-{n:05d}")["status"] == "stored"
        total = args.runbooks * args.per_runbook
        print(f"{total} records signed and pushed in {time.monotonic() - t:.1f}s")
        home = root / "home"
        home.mkdir(mode=0o700)
        ok = True
        for label in ("first", "second"):
            client = aws_client("s3")
            t0 = time.perf_counter()
            rows, problems, read = read_s3_history(
                S3Store("bench-evidence", "drills/", 0, None, client=client), verifiers, "bench", home
            )
            took = time.perf_counter() - t0
            print(f"{label:<6} {len(rows)} rows, {len(problems)} problems, {read.checked} checked, "
                  f"{client.calls} S3 calls, {took:.2f}s")  # fmt: skip
            ok = ok and len(rows) == total and not problems
            if label == "second":
                ok = ok and read.checked == 0 and client.calls == -(-total // 1000)
    print("goal met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
