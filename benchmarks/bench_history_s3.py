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
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from signed_chains import sign_chains  # noqa: E402

from drills.evidence import generate_keypair, load_signer, load_verifiers  # noqa: E402


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
        for name, run_id, path in sign_chains(root / "ev", signer, args.runbooks, args.per_runbook):
            assert store.push(path, name, run_id)["status"] == "stored"
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
