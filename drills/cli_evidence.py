"""The evidence commands of ``drill``: keygen, verify (a record or a pack), pack, evidence push, kms-pubkey, report.

Each imports what it needs when it runs, so ``drill --help`` stays fast; errors are ours
(:mod:`drills.errors`) and :mod:`drills.cli` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    modes = [m for m in (a.file, a.chain, a.pack) if m is not None]
    if len(modes) != 1:
        raise InputError(
            "give one of: an evidence FILE, --chain DIR, --pack PACK", hint="drill verify FILE --key drill.pub"
        )
    if a.pack is not None:
        if a.head_digest:
            raise InputError("--head-digest pins a chain head: use it with --chain DIR")
        return _verify_pack(a)
    if a.key is None:
        raise InputError("--key (or --keyring) is required to verify a FILE or a --chain DIR")
    given_file(a.key, "--key")
    if a.chain is not None:
        return _verify_chain(a.chain, load_verifiers(a.key), a.head_digest or [])
    if a.head_digest:
        raise InputError("--head-digest pins a chain head: use it with --chain DIR")
    given_file(a.file, "evidence file")
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
    for runbook, missing in res.gaps:
        print(
            f"{runbook}: chain positions {', '.join(str(s) for s in missing)} are missing from the evidence "
            "directory; the pack shows the hole and `drill verify --pack` will refuse it"
        )
    return 1 if res.gaps else 0


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


def _verify_chain(directory: Path, verifiers: Any, pins: list[str]) -> int:
    """``drill verify --chain DIR``: every runbook's chain, its head and its problems; 0 only if all hold."""
    from drills.evidence.chain import Head, verify_directory

    if not directory.is_dir():
        raise InputError(f"--chain {directory} is not a directory")
    for pin in pins:
        if not re.fullmatch(r"(sha256:)?[0-9a-fA-F]{64}", pin):
            raise InputError(f"--head-digest {pin!r} is not a SHA-256 (64 hex digits, optionally sha256:)")
    report = verify_directory(directory, verifiers, pins)
    if not report.runbooks:
        raise InputError(
            f"--chain {directory} holds no evidence (no *.evidence.json, no chain head)",
            hint="pass the evidence directory the drills write to (the runbook's evidence.dir)",
        )
    for name, (records, head, problems, notes) in report.runbooks.items():
        seqs = [r.seq for r in records if r.seq is not None]
        span = f"seq {min(seqs)}..{max(seqs)}" if seqs else "no trusted records"
        print(f"runbook {name}: {len(records)} trusted record(s), {span}: {'OK' if not problems else 'BROKEN'}")
        if isinstance(head, Head):
            print(f"  head seq {head.seq} ({head.run_id}); pin it with --head-digest {head.sha256}")
        for problem in problems:
            print(f"  {problem.kind.upper()}: {problem.message}")
        for note in notes:
            print(f"  note: {note}")
    for problem in report.pins_not_found:
        print(f"{problem.kind.upper()}: {problem.message}")
    return 0 if report.ok else 1
