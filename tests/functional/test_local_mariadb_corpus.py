"""A corruption corpus for MariaDB PITR, each case built from a real backup and five real binlogs.

A broken backup is a failed drill: verdict ``failed``, exit 1, signed evidence naming the
defect, and nothing left running. A gap after a time target is a fact, not a refusal. A replay
that ends early (the client fails on an event, or mariadb-binlog skips the rest of a file
and exits 0) is an IncompleteRecovery, never a pass. ``drill validate`` finds the same defects
with no server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from maria_helpers import (
    BinlogCorpus,
    binlog_events,
    build_binlog_corpus,
    copy_binlogs,
    fix_crc,
    requires_mariadb,
    scratch_dir,
)

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import PreflightReport, StepContext
from drills.clock import iso
from drills.engines.mariadb.backend import LocalMariadb, check_backup
from drills.engines.mariadb.declaration import MariadbDumpSource, MariadbPitrSource
from drills.engines.mariadb.server import run_as_for_mariadb
from drills.engines.mariadb.steps import MariaPlan
from drills.errors import BackupDefect
from drills.evidence.keys import load_public_key
from drills.evidence.store import read_and_verify
from drills.osutil import pids_using
from drills.runbook import load_runbook

pytestmark = [*requires_mariadb, pytest.mark.slow]

ROTATE, TABLE_MAP, WRITE_ROWS, ANNOTATE_ROWS, GTID = 4, 19, 23, 160, 162


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with scratch_dir("rd-maria-corpus-") as d:
        yield d


@pytest.fixture(scope="module")
def corpus(base: Path) -> BinlogCorpus:
    return build_binlog_corpus(base / "corpus")


def _case(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    return d


def maria(src: Any) -> MariadbPitrSource | MariadbDumpSource:
    """The runbook's source, as the MariaDB source these cases load."""
    assert isinstance(src, MariadbPitrSource | MariadbDumpSource), src
    return src


def _runbook(
    corpus: BinlogCorpus, case: Path, *, target: str | None = None, rows: int | None = None, **paths: Path
) -> Path:
    """A runbook for the case: the corpus backup and binlogs unless replaced, two smoke checks on the rows."""
    t = corpus.target.strftime("%Y-%m-%d %H:%M:%S")
    latest = target == "latest"
    rows = rows if rows is not None else corpus.rows_total if latest else corpus.rows_before_target
    doc: dict[str, Any] = {
        "name": f"corpus-{case.name}",
        "source": {
            "kind": "mariadb-pitr",
            "backup": str(paths.get("backup", corpus.backup)),
            "binlogs": str(paths.get("binlogs", corpus.binlogs)),
            "target_time": target or iso(corpus.target),
            "database": "corpus",
        },
        "objectives": {"rto_seconds": 300},
        "validators": {
            "smoke": [
                {"name": "every row the target holds", "sql": "select count(*) from corpus.orders", "expect": rows},
                {
                    "name": "nothing at or after the target",
                    "sql": f"select count(*) from corpus.orders where created_at >= '{t}'",
                    "expect": rows - corpus.rows_before_target if latest else 0,
                },
            ]
        },
        "evidence": {"dir": str(case / "evidence"), "signing_key": str(corpus.key)},
    }
    path = case / "runbook.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _scratch(case: Path) -> Path:
    """The case's scratch root: short (a socket path has 107 bytes), traversable by the server's user."""
    link = case / "scratch"
    if not link.exists():
        link.symlink_to(tempfile.mkdtemp(prefix="rdm-", dir="/var/tmp"))
        link.resolve().chmod(0o755)
    return link.resolve()


def _drill(case: Path, runbook: Path, factory: Any = None) -> RunResult:
    opts = RunOptions(home=case / "home", scratch_root=_scratch(case), backend_factory=factory)
    return run_drill(load_runbook(runbook), opts)


def _nothing_left(case: Path) -> None:
    scratch = _scratch(case)
    assert not pids_using(scratch), "a process of the run is still running"
    assert not any(scratch.iterdir()), list(scratch.iterdir())
    scratch.rmdir()


def _failed_with_evidence(res: RunResult, corpus: BinlogCorpus, case: Path, kind: str, *needles: str) -> dict[str, Any]:
    """Verdict failed, exit 1, the defect named in the error and in the signed evidence; nothing running."""
    assert res.verdict == "failed", res.error
    assert res.exit_code == 1, (res.exit_code, res.error)
    assert res.error is not None and res.error.startswith(f"{kind}: "), res.error
    for needle in needles:
        assert needle in res.error, (needle, res.error)
    assert res.evidence is not None and res.evidence.exists()
    statement = read_and_verify(res.evidence, [load_public_key(corpus.key.with_suffix(".pub"))])
    predicate: dict[str, Any] = statement["predicate"]
    assert predicate["results"]["verdict"] == "failed"
    assert predicate["error"]["type"] == kind
    for needle in needles:
        assert needle in predicate["error"]["message"], (needle, predicate["error"])
    _nothing_left(case)
    return predicate


def _events(path: Path) -> list[tuple[int, int, int]]:
    return binlog_events(path.read_bytes())


# ---------------------------------------------------------------- the chain is broken before the target


def test_a_binlog_missing_in_the_middle_fails_the_drill(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "missing-middle")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    (binlogs / "mysql-bin.000002").unlink()
    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    predicate = _failed_with_evidence(res, corpus, case, "BackupDefect", "mysql-bin.000002: missing from")
    assert "listed in mysql-bin.index" in res.error  # type: ignore[operator]
    assert predicate["error"]["state"] == "preflight"


def test_a_truncated_binlog_fails_the_drill(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "truncated")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    rows = [e for e in _events(f) if e[2] == WRITE_ROWS]
    cut = rows[1][0] + 10  # ten bytes into the second order's row event
    with f.open("r+b") as fh:
        fh.truncate(cut)
    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    _failed_with_evidence(res, corpus, case, "BackupDefect", f"mysql-bin.000002: truncated at {cut} bytes")


def test_a_binlog_cut_at_an_event_boundary_is_still_truncated(corpus: BinlogCorpus, base: Path) -> None:
    """No partial event, but the server closed the file, so it must end with its Rotate event."""
    case = _case(base, "cut-clean")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    rotate = next(e for e in _events(f) if e[2] == ROTATE)
    with f.open("r+b") as fh:
        fh.truncate(rotate[0])
    src = load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source
    with pytest.raises(BackupDefect, match=rf"mysql-bin\.000002: truncated at {rotate[0]} bytes: .* Rotate or Stop"):
        check_backup(maria(src))


def test_a_bad_checksum_fails_the_drill(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "bad-checksum")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    pos, length, _ = [e for e in _events(f) if e[2] == WRITE_ROWS][2]
    data = bytearray(f.read_bytes())
    for i in range(pos + 25, pos + 29):  # inside the row image, past the header: only the CRC can tell
        data[i] ^= 0x5A
    f.write_bytes(bytes(data))
    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    _failed_with_evidence(
        res, corpus, case, "BackupDefect", f"mysql-bin.000002: bad checksum in the Write_rows event at {pos}"
    )
    assert length > 29


def test_a_missing_backup_directory_is_a_failed_drill_not_a_typo(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "no-backup")
    gone = case / "backups" / "2026-11-30"
    res = _drill(case, _runbook(corpus, case, backup=gone))
    _failed_with_evidence(res, corpus, case, "BackupDefect", f"no backup at {gone} (did last night's backup run?")


def test_a_binlog_the_server_user_cannot_read_fails_the_drill(corpus: BinlogCorpus, base: Path) -> None:
    run_as = run_as_for_mariadb()
    if run_as is None:
        pytest.skip("only root hands mariadb-binlog to another user")
    case = _case(base, "unreadable")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000003"
    shutil.chown(f, "root", "root")
    f.chmod(0o600)
    src = load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source
    with pytest.raises(BackupDefect, match=rf"mysql-bin\.000003: not readable by {run_as.name} \(mode 0600"):
        check_backup(maria(src))


def _magic(data: bytearray) -> str:
    data[:4] = b"GARB"
    return "not a binlog: starts with 47415242, expected fe62696e"


def _algorithm(data: bytearray) -> str:
    length = int.from_bytes(data[4 + 9 : 4 + 13], "little")
    data[4 + length - 5] = 7
    return "format description at 4 names checksum algorithm 7"


def _length(data: bytearray) -> str:
    pos = [e for e in binlog_events(bytes(data)) if e[2] == WRITE_ROWS][1][0]
    data[pos + 9 : pos + 13] = (12).to_bytes(4, "little")  # the event length field
    return f"corrupt event header at {pos} (Write_rows, length 12"


@pytest.mark.parametrize("mangle", [_magic, _algorithm, _length])
def test_a_damaged_binlog_is_named_with_what_is_wrong(corpus: BinlogCorpus, base: Path, mangle: Any) -> None:
    case = _case(base, f"damaged-{mangle.__name__.strip('_')}")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    data = bytearray(f.read_bytes())
    problem = mangle(data)
    f.write_bytes(bytes(data))
    src = load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source
    with pytest.raises(BackupDefect, match=re.escape(f"mysql-bin.000002: {problem}")):
        check_backup(maria(src))


def test_an_event_mariadb_binlog_cannot_decode_is_found_before_a_server_starts(
    corpus: BinlogCorpus, base: Path
) -> None:
    """A checksum that matches an event of a type this mariadb-binlog does not know (as a newer server
    might write): the scan cannot tell, the preflight pass of mariadb-binlog over the same range can."""
    case = _case(base, "undecodable")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    data = bytearray(f.read_bytes())
    pos, length, _ = [e for e in binlog_events(bytes(data)) if e[2] == ANNOTATE_ROWS][1]
    data[pos + 4] = 200  # the event type byte
    fix_crc(data, pos, length)
    f.write_bytes(bytes(data))
    src = load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source
    with pytest.raises(BackupDefect, match=r"mysql-bin\.000002: mariadb-binlog --verify-binlog-checksum cannot read"):
        check_backup(maria(src))
    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    _failed_with_evidence(res, corpus, case, "BackupDefect", "Found invalid event", f"offset {pos}")


def test_a_backup_whose_redo_log_is_damaged_fails_the_drill(corpus: BinlogCorpus, base: Path) -> None:
    """mariadb-backup --prepare refuses the copy: the backup's content, not the machine, so exit 1."""
    case = _case(base, "bad-redo")
    backup = case / "backup"
    shutil.copytree(corpus.backup, backup)
    log = backup / "ib_logfile0"
    data = bytearray(log.read_bytes())
    for i in range(12288, 16384):  # the first log block after the header and checkpoints
        data[i] ^= 0xFF
    log.write_bytes(bytes(data))
    res = _drill(case, _runbook(corpus, case, backup=backup))
    predicate = _failed_with_evidence(res, corpus, case, "BackupDefect", "mariadb-backup --prepare failed")
    assert predicate["error"]["state"] == "restore"
    assert len(res.error or "") < 1500  # the last lines of its output, not all of it


# ---------------------------------------------------------------- what a target does not need


def test_a_gap_after_the_target_is_reported_and_the_drill_passes(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "missing-after")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    (binlogs / "mysql-bin.000005").unlink()
    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    assert res.verdict == "passed", res.error
    assert res.exit_code == 0
    assert res.findings and all(f["passed"] for f in res.findings)  # exactly the rows before the target
    assert res.evidence is not None
    predicate = read_and_verify(res.evidence, [load_public_key(corpus.key.with_suffix(".pub"))])["predicate"]
    chain = predicate["recovery_point"]["binlog_chain"]
    assert any(d.startswith("mysql-bin.000005: missing") for d in chain["defects_not_needed"]), chain
    assert chain["replayed_files"] == ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]
    proof = predicate["target"]["recovery"]
    assert proof["complete"] is True
    reached, requested = proof["reached"], proof["requested"]
    assert (reached["file"], reached["position"]) == (requested["file"], requested["position"])
    assert requested["file"] == "mysql-bin.000003"
    assert requested["event_time"] == corpus.target.strftime("%Y-%m-%dT%H:%M:%SZ")  # the first event at the target
    assert reached["event_time"] < requested["event_time"]  # the last event replayed is before it
    # the newest transaction mariadb-binlog emitted is the one the scan found last before the target
    assert proof["newest_replayed_transaction_at"] == proof["expected_last_transaction_at"]
    assert proof["newest_replayed_transaction_at"] < requested["event_time"]
    _nothing_left(case)


def test_latest_fails_when_binlogs_beyond_a_gap_cannot_be_reached(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "latest-gap")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    (binlogs / "mysql-bin.000004").unlink()
    src = load_runbook(_runbook(corpus, case, binlogs=binlogs, target="latest")).runbook.source
    with pytest.raises(BackupDefect, match=r"mysql-bin\.000004: missing .* cannot reach: mysql-bin\.000005"):
        check_backup(maria(src))


def test_latest_ends_where_the_copied_binlogs_end(corpus: BinlogCorpus, base: Path) -> None:
    """The archive lacks the binlog the source was still writing: the range ends there, and says so."""
    case = _case(base, "latest-end")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    (binlogs / "mysql-bin.000005").unlink()  # still named by the index and by 000004's Rotate event
    facts = check_backup(maria(load_runbook(_runbook(corpus, case, binlogs=binlogs, target="latest")).runbook.source))
    chain = facts["binlog_chain"]
    assert chain["restorable_until"]["file"] == "mysql-bin.000004"
    assert chain["restorable_until"]["position"] == (binlogs / "mysql-bin.000004").stat().st_size
    assert "mysql-bin.000004 ends with a Rotate to mysql-bin.000005, which is not here" in chain["chain_end"]


def test_latest_restores_a_live_copy_to_its_last_whole_event(corpus: BinlogCorpus, base: Path) -> None:
    """The last binlog copied while the source wrote it: in-use flag, a partial last event. The range ends
    at the last whole event, the replay stops exactly there, and the drill passes with what that holds."""
    case = _case(base, "live-copy")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000005"
    data = bytearray(f.read_bytes())
    data[4 + 17] |= 0x01  # in use: the server had not closed it
    last_tx = [e for e in binlog_events(bytes(data)) if e[2] == GTID][-1]
    cut = last_tx[0] + 20  # inside the GTID event that opens the last transaction (one order)
    f.write_bytes(bytes(data[:cut]))
    res = _drill(case, _runbook(corpus, case, target="latest", rows=corpus.rows_total - 1, binlogs=binlogs))
    assert res.verdict == "passed", (res.error, [f for f in res.findings if not f["passed"]])
    assert res.findings and all(f["passed"] for f in res.findings)
    assert res.evidence is not None
    predicate = read_and_verify(res.evidence, [load_public_key(corpus.key.with_suffix(".pub"))])["predicate"]
    rp = predicate["recovery_point"]
    assert rp["requested"]["file"] == "mysql-bin.000005" and rp["requested"]["position"] == last_tx[0]
    assert "still open on the source (in-use flag) and ends with a partial event" in rp["restorable_range_ends"]
    proof = predicate["recovery"]
    assert proof["complete"] is True and proof["reached"]["position"] == last_tx[0]
    assert rp["last_archived_commit"] == proof["newest_replayed_transaction_at"] is not None
    assert predicate["results"]["loss_in_archive_ms"] == 0  # latest: nothing the binlogs hold was left out
    _nothing_left(case)


def test_latest_refuses_a_closed_binlog_that_lost_its_end(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "latest-cut")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000005"
    last_tx = [e for e in _events(f) if e[2] == GTID][-1]
    with f.open("r+b") as fh:
        fh.truncate(last_tx[0] + 20)
    src = load_runbook(_runbook(corpus, case, target="latest", binlogs=binlogs)).runbook.source
    with pytest.raises(BackupDefect, match=rf"mysql-bin\.000005: truncated at {last_tx[0] + 20} bytes"):
        check_backup(maria(src))


def test_target_outside_the_binlogs_is_a_backup_defect(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "outside")
    late = _runbook(corpus, case, target=iso(corpus.target + timedelta(hours=1)))
    with pytest.raises(BackupDefect, match=r"after the last event in the binlogs; restorable range \S+ \.\. \S+"):
        check_backup(maria(load_runbook(late).runbook.source))
    early = _runbook(corpus, case, target=iso(corpus.target - timedelta(hours=1)))
    with pytest.raises(BackupDefect, match=r"before the backup finished"):
        check_backup(maria(load_runbook(early).runbook.source))


# ---------------------------------------------------------------- replay that ends early


def test_replay_failing_on_an_event_is_an_incomplete_recovery(corpus: BinlogCorpus, base: Path) -> None:
    """A table map that names a table the backup does not have, with a valid checksum: preflight cannot
    tell, the client fails on it, and the drill says where replay ended."""
    case = _case(base, "client-fails")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    data = bytearray(f.read_bytes())
    pos, length, _ = [e for e in binlog_events(bytes(data)) if e[2] == TABLE_MAP][3]
    at = data.index(b"\x06orders\x00", pos, pos + length)
    data[at + 1 : at + 7] = b"ordxrs"
    fix_crc(data, pos, length)
    f.write_bytes(bytes(data))
    check_backup(maria(load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source))  # structurally sound

    res = _drill(case, _runbook(corpus, case, binlogs=binlogs))
    predicate = _failed_with_evidence(
        res, corpus, case, "IncompleteRecovery", "binlog replay ended at mysql-bin.000002:", "'corpus.ordxrs'"
    )
    assert predicate["error"]["state"] == "await_ready"
    proof = predicate["target"]["recovery"]
    assert proof["complete"] is False
    # the row event printed with that table map (one BINLOG statement) is the one the client failed on
    assert (proof["reached"]["file"], proof["reached"]["position"]) == ("mysql-bin.000002", pos + length)
    assert proof["requested"]["file"] == "mysql-bin.000003"
    assert predicate["validation"]["findings"] == []  # no validator ran on what was not restored


@pytest.mark.parametrize(
    ("event", "consequence"),
    [
        (GTID, "exited 0 but stopped early"),  # at a transaction boundary: both processes succeed
        (WRITE_ROWS, "then the mariadb client failed"),  # mid-transaction: the next file's GTID fails in the client
    ],
)
def test_replay_that_silently_skips_the_rest_of_a_binlog_is_caught(
    corpus: BinlogCorpus, base: Path, event: int, consequence: str
) -> None:
    """mariadb-binlog treats an unreadable event in a binlog flagged "in use" as the end of that file, goes on
    with the next one and exits 0. The file changes after preflight, so only the replay proof can see it."""
    case = _case(base, f"silent-skip-{event}")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    f = binlogs / "mysql-bin.000002"
    data = bytearray(f.read_bytes())
    data[4 + 17] |= 0x01  # the format description's in-use flag (a live copy, or a crash); its CRC ignores it
    f.write_bytes(bytes(data))
    check_backup(maria(load_runbook(_runbook(corpus, case, binlogs=binlogs)).runbook.source))
    pos, _length, _ = [e for e in binlog_events(bytes(data)) if e[2] == event][2]

    class Corrupting(LocalMariadb):
        def preflight(self, ctx: StepContext) -> PreflightReport[MariaPlan]:
            report = super().preflight(ctx)
            changed = bytearray(f.read_bytes())  # after preflight checked the file: the replay reads another
            changed[pos + 21] ^= 0x5A
            f.write_bytes(bytes(changed))
            return report

    res = _drill(case, _runbook(corpus, case, binlogs=binlogs), factory=Corrupting)
    predicate = _failed_with_evidence(
        res, corpus, case, "IncompleteRecovery", f"binlog replay ended at mysql-bin.000002:{pos}", consequence
    )
    proof = predicate["target"]["recovery"]
    assert proof["complete"] is False
    assert (proof["reached"]["file"], proof["reached"]["position"]) == ("mysql-bin.000002", pos)


def test_a_scratch_too_small_for_the_backup_is_refused_with_the_numbers(corpus: BinlogCorpus, base: Path) -> None:
    small = Path(tempfile.mkdtemp(prefix="rdm-small-", dir="/var/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        small.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        small.chmod(0o755)
        case = _case(base, "small-scratch")
        opts = RunOptions(home=case / "home", scratch_root=small)
        res = run_drill(load_runbook(_runbook(corpus, case)), opts)
        assert res.exit_code == 2 and res.failed_state == "preflight", res.error
        assert "MiB free; this restore needs about" in (res.error or "") and "backup and binlogs" in (res.error or "")
        assert not pids_using(small) and not list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=False)
        small.rmdir()


# ---------------------------------------------------------------- following the replay


def test_the_replay_tracker_agrees_with_a_plain_reading_of_the_output(corpus: BinlogCorpus) -> None:
    """Fed mariadb-binlog's real output in odd chunk sizes, the tracker finds what a line-by-line reading finds."""
    import random

    from drills.engines.mariadb.binlog import inspect_chain
    from drills.engines.mariadb.plan import plan_replay
    from drills.engines.mariadb.replay import ReplayTracker
    from drills.engines.mariadb.server import find_maria_binaries

    info = (corpus.backup / "xtrabackup_binlog_info").read_text().split()
    chain = inspect_chain(corpus.binlogs, info[0], int(info[1]))
    plan = plan_replay(chain, None, 0)
    out = subprocess.run(
        [find_maria_binaries(need=("binlog",)).tool("binlog"), "--no-defaults", f"--start-position={info[1]}",
         *[str(corpus.binlogs / n) for n in plan.files]],
        capture_output=True, check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    lines = out.split(b"\n")
    rng = random.Random(5)
    for _ in range(3):
        tracker = ReplayTracker(plan.files, int(info[1]))
        i = 0
        while i < len(out):
            n = rng.choice([1, 3, 17, 4096, 65536])
            tracker.feed(out[i : i + n])
            i += n
        tracker.finish()
        assert tracker.shortfall(plan) is None
        reached = tracker.reached()
        assert reached is not None and (reached.file, reached.pos) == (plan.files[-1], plan.requested.pos)
        for line in rng.sample(range(1, len(lines)), 200):
            ats = [k for k in range(line) if lines[k].startswith(b"# at ")]
            if not ats:
                continue
            k = ats[-1]
            file_k = sum(1 for j in range(k + 1) if lines[j] == b"# at 4") - 1
            got = tracker.event_at_line(line)
            assert got is not None and (got.file, got.pos) == (plan.files[file_k], int(lines[k][5:])), line


# ---------------------------------------------------------------- drill validate


def test_drill_validate_finds_the_defect_without_a_server(corpus: BinlogCorpus, base: Path) -> None:
    case = _case(base, "validate")
    binlogs = copy_binlogs(corpus, case / "binlogs")
    good = _runbook(corpus, case)
    ok = subprocess.run(
        [sys.executable, "-m", "drills.cli", "validate", str(good)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    (binlogs / "mysql-bin.000003").unlink()
    bad = _runbook(corpus, case, binlogs=binlogs)
    res = subprocess.run(
        [sys.executable, "-m", "drills.cli", "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 1, res.stderr
    assert "BackupDefect" in res.stderr and "mysql-bin.000003: missing" in res.stderr
    assert not pids_using(case)
