"""The evidence commands of ``drill``: keygen, verify (a record or a pack), pack, evidence push, kms-pubkey, report.

Each imports what it needs when it runs, so ``drill --help`` stays fast; errors are ours
(:mod:`drills.errors`) and :mod:`drills.cli` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from drills import __version__
from drills.errors import InputError

__all__ = [
    "cmd_evidence_push",
    "cmd_keygen",
    "cmd_kms_pubkey",
    "cmd_pack",
    "cmd_report",
    "cmd_verify",
    "given_file",
]


def cmd_keygen(a: argparse.Namespace) -> int:
    from drills.evidence.keys import generate_keypair

    keyid = generate_keypair(a.out, force=a.force)
    print(f"private key: {a.out}\npublic key:  {Path(a.out).with_suffix('.pub')}\nkeyid:       {keyid}")
    return 0


def given_file(path: Path, what: str) -> None:
    """A file named on the command line must exist: a typo is bad input (2), not an evidence failure."""
    if not path.is_file():
        why = "is not a file" if path.exists() else "does not exist"
        raise InputError(f"{what} {path} {why}")


def cmd_verify(a: argparse.Namespace) -> int:
    from drills.evidence.keys import load_verifiers
    from drills.evidence.store import read_and_verify, summary

    if a.pack is not None:
        return _verify_pack(a)
    if a.file is None or a.key is None:
        raise InputError("give an evidence FILE and --key (or --pack PACK)", hint="drill verify FILE --key drill.pub")
    given_file(a.file, "evidence file")
    given_file(a.key, "--key")
    statement = read_and_verify(a.file, load_verifiers(a.key))
    print(f"{a.file}: signature and payload OK")
    print(summary(statement))
    return 0


def _verify_pack(a: argparse.Namespace) -> int:
    from drills.evidence.keys import load_verifiers
    from drills.evidence.pack import verify_pack

    if not a.pack.exists():
        raise InputError(f"--pack {a.pack} does not exist")
    if a.key is not None:
        given_file(a.key, "--key")
    check = verify_pack(a.pack, load_verifiers(a.key) if a.key else None)
    for w in check.warnings:
        print(f"warning: {w}")
    for problem in check.problems:
        print(f"FAIL {problem}")
    if check.problems:
        print(f"{a.pack}: {len(check.problems)} problem(s); {check.records} record(s) verified")
        return 1
    print(f"{a.pack}: every file matches its manifest, {check.records} record(s) verified, report.html re-rendered")
    return 0


def cmd_pack(a: argparse.Namespace) -> int:
    from drills.evidence.keys import load_verifiers
    from drills.evidence.pack import build_pack, parse_when

    given_file(a.key, "--key")
    since = parse_when(a.since, "--since")
    until = parse_when(a.until, "--until") if a.until else datetime.now(UTC)
    res = build_pack(
        a.evidence_dir,
        load_verifiers(a.key),
        since=since,
        until=until,
        out=a.out,
        tool_version=__version__,
        runbooks=a.runbook or None,
    )
    print(f"pack written to {res.out}: {res.records} verified record(s), signed by {', '.join(res.keyids) or 'none'}")
    for name, why in res.unverified:
        print(f"not included (did not verify): {name}: {why}")
    return 0


def cmd_evidence_push(a: argparse.Namespace) -> int:
    from drills.api import RunOptions, _evidence_store
    from drills.errors import InfrastructureError
    from drills.evidence.keys import load_verifiers
    from drills.evidence.s3 import push_pending
    from drills.runbook import load_runbook

    loaded = load_runbook(a.file, check_paths=False)
    store = _evidence_store(loaded, RunOptions())
    if store is None:
        raise InputError(f"{a.file}: the runbook has no evidence.s3 to push to")
    given_file(a.key, "--key")
    verifiers = load_verifiers(a.key)
    store.check_bucket()
    results = push_pending(store, a.evidence_dir or loaded.runbook.evidence.dir, loaded.runbook.name, verifiers)
    for path, status, error in results:
        print(f"{status:<14} {path.name}" + (f": {error}" if error else ""))
    left = [r for r in results if r[1] not in ("stored", "already-stored")]
    if left:
        raise InfrastructureError(f"{len(left)} record(s) not stored on s3://{store.bucket}", hint="run it again")
    print(f"every record of {loaded.runbook.name} is on s3://{store.bucket} under lock ({len(results)} pushed now)")
    return 0


def cmd_kms_pubkey(a: argparse.Namespace) -> int:
    from drills.aws.kms import KmsSigner, export_public_key

    signer = KmsSigner(a.key_id)
    export_public_key(signer, a.out)
    print(f"public key of {a.key_id} written to {a.out}\nkeyid: {signer.keyid}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from drills.evidence.dsse import open_envelope
    from drills.evidence.keys import load_verifiers
    from drills.evidence.store import read_and_verify
    from drills.report import render_markdown

    given_file(a.file, "evidence file")
    given_file(a.key, "--key")
    verifiers = load_verifiers(a.key)
    statement = read_and_verify(a.file, verifiers)
    keyids = [k.keyid for k in open_envelope(a.file.read_bytes(), verifiers).verified_by]
    text = render_markdown(statement, evidence_name=a.file.name, keyid=", ".join(keyids) or None)
    if a.out:
        try:
            a.out.write_text(text)
        except OSError as exc:
            raise InputError(f"--out {a.out}: cannot write the report: {exc.strerror or exc}") from None
        print(f"report written to {a.out}")
    else:
        sys.stdout.write(text)
    return 0
