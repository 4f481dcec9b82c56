"""What the pgBackRest and Barman drill tests check alike: the repository's bytes, the signed record, no server left."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from drills.api import RunResult, default_key_path
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify


def repo_digest(repo: Path) -> dict[str, str]:
    """sha256 of every file of the repository, by relative path (directories listed too)."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(repo):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), repo) + "/"] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, repo)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def evidence(res: RunResult) -> dict[str, Any]:
    """The signed record, verified with the key the drill signed it with."""
    assert res.evidence is not None
    verifiers = load_verifiers(default_key_path().with_suffix(".pub"))
    predicate: dict[str, Any] = read_and_verify(res.evidence, verifiers)["predicate"]
    return predicate


def no_server_left(run_id: str) -> bool:
    out = subprocess.run(["pgrep", "-af", "postgres"], capture_output=True, text=True, check=False).stdout
    return run_id not in out


def wait_archived(conn: Any) -> None:
    """Switch WAL and wait until the source has archived the segment that was current."""
    seg = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    conn.execute("select pg_switch_wal()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
        if row and row[0] and row[0] >= seg:
            return
        time.sleep(0.05)
    raise AssertionError("the source did not archive its WAL in time")
