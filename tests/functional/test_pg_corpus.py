"""The corruption corpus: real archives, damaged the way real ones get damaged, drilled on real servers.

Each case asserts what an operator reads: the verdict, the exit code, the file named in the
defect, that signed evidence exists, and that nothing of the run is left running. No backup
defect may end in ``passed``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from pg_corpus import BATCH_ROWS, CorpusSource, build_corpus_source, copy_corpus

from drills.api import RunOptions, RunResult, default_key_path, run_drill
from drills.cli import main
from drills.engines.postgres.backup import inspect_base_backup
from drills.engines.postgres.plan import plan_pitr
from drills.engines.postgres.server import find_pg_binaries
from drills.errors import BackupDefect, PreflightError
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.runbook import load_runbook

pytestmark = pytest.mark.postgres

SEG = 1 << 20  # the corpus cluster's segment size
PAGE = 8192


@pytest.fixture(scope="session")
def corpus(pg_binaries: None) -> Iterator[CorpusSource]:
    root = Path(tempfile.mkdtemp(prefix="rd-corpus-"))
    root.chmod(0o755)
    yield build_corpus_source(root / "src")
    shutil.rmtree(root, ignore_errors=True)


def drill(rb: Path, **opts: Any) -> RunResult:
    return run_drill(load_runbook(rb), RunOptions(**opts))


def evidence_of(res: RunResult, drill_home: Path) -> dict[str, Any]:
    assert res.evidence is not None and res.evidence.exists(), "a failed drill still leaves signed evidence"
    verifiers = load_verifiers(default_key_path(drill_home).with_suffix(".pub"))
    predicate: dict[str, Any] = read_and_verify(res.evidence, verifiers)["predicate"]
    return predicate


def nothing_left(res: RunResult) -> bool:
    procs = subprocess.run(["pgrep", "-af", f"restore-drill-{res.run_id}"], capture_output=True, text=True, check=False)
    scratch = Path(tempfile.gettempdir()) / f"restore-drill-{res.run_id}"
    return procs.stdout.strip() == "" and not scratch.exists()


def failed_with(res: RunResult, drill_home: Path, *texts: str) -> dict[str, Any]:
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    for t in texts:
        assert t in (res.error or ""), (t, res.error)
    ev = evidence_of(res, drill_home)
    assert ev["results"]["verdict"] == "failed"
    assert ev["results"]["reasons"], "the evidence says why"
    assert nothing_left(res)
    return ev


def seg_of(corpus: CorpusSource, batch: int) -> str:
    return corpus.batch_segments[batch - 1]


# ------------------------------------------------------------------ clean archives pass exactly


def test_time_target_restores_exactly_the_batches_before_it(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    ev = evidence_of(res, drill_home)
    assert ev["recovery"]["complete"] is True
    assert ev["recovery"]["newest_replayed_transaction_at"].startswith(
        corpus.commit_times[2].strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert ev["recovery_point"]["wal_archive"]["segment_size"] == SEG
    assert ev["recovery_point"]["base_backup"]["verification"]["method"].startswith("pg_verifybackup")
    assert nothing_left(res)


def test_latest_restores_every_batch_and_reports_lag_and_zero_loss(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", 6 * BATCH_ROWS)
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    out = res.to_json()
    assert out["loss_in_archive_seconds"] == 0
    assert out["archive_lag_seconds"] is not None and out["archive_lag_seconds"] > 0
    assert evidence_of(res, drill_home)["results"]["loss_in_archive_ms"] == 0


def test_tar_format_base_backup_is_checked_against_its_manifest_and_restores(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(2), 2 * BATCH_ROWS, base="base-tar")
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    verification = evidence_of(res, drill_home)["recovery_point"]["base_backup"]["verification"]
    assert verification["method"] == "tar members against backup_manifest checksums"
    assert verification["files_checked"] > 900


# ------------------------------------------------------------------ missing segments


def test_segment_missing_before_the_target_fails_naming_it(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    (rb.parent / "wal" / seg_of(corpus, 2)).unlink()
    res = drill(rb)
    failed_with(res, drill_home, f"{seg_of(corpus, 2)}: missing")
    assert res.failed_state == "preflight"


def test_segment_missing_after_a_time_target_is_a_fact_not_a_refusal(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    (rb.parent / "wal" / seg_of(corpus, 5)).unlink()
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    facts = evidence_of(res, drill_home)["recovery_point"]["wal_archive"]["outside_needed_range"]
    assert any(seg_of(corpus, 5) in f and "missing" in f for f in facts), facts


def test_segment_missing_inside_the_archive_fails_latest(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    (rb.parent / "wal" / seg_of(corpus, 5)).unlink()
    res = drill(rb)
    failed_with(res, drill_home, f"{seg_of(corpus, 5)}: missing", "the archive holds commits until")


def test_empty_archive_fails(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    for f in (rb.parent / "wal").iterdir():
        f.unlink()
    failed_with(drill(rb), drill_home, "holds no WAL segments")


def test_missing_base_backup_directory_is_a_failed_drill_with_evidence(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    shutil.rmtree(rb.parent / "base")  # last night's backup never ran
    failed_with(drill(rb), drill_home, "no base backup at")


# ------------------------------------------------------------------ damaged segments


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_truncated_segment_fails_with_its_size(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    os.truncate(rb.parent / "wal" / seg_of(corpus, 2), SEG // 2)
    failed_with(drill(rb), drill_home, f"{seg_of(corpus, 2)}: {SEG // 2} bytes, expected {SEG}")


def test_zeroed_pages_inside_written_wal_fail_latest(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    """The probe that PASSED at 27 % of the data: 64 KiB zeroed in the middle of the archive, target latest."""
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    _patch(rb.parent / "wal" / seg_of(corpus, 3), 16 * PAGE, bytes(64 * 1024))
    failed_with(drill(rb), drill_home, seg_of(corpus, 3), "zeroed inside written WAL")


def test_segment_from_another_timeline_fails(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    path = rb.parent / "wal" / seg_of(corpus, 2)
    for page in range(SEG // PAGE):
        _patch(path, page * PAGE + 4, (2).to_bytes(4, "little"))  # xlp_tli
    failed_with(drill(rb), drill_home, seg_of(corpus, 2), "written on timeline 2")


def test_renamed_segment_fails(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(4), 4 * BATCH_ROWS)
    wal = rb.parent / "wal"
    shutil.copyfile(wal / seg_of(corpus, 3), wal / seg_of(corpus, 2))
    failed_with(drill(rb), drill_home, seg_of(corpus, 2), "holds another segment's WAL")


def _damage_records(path: Path) -> None:
    """Overwrite record bytes in the written part of a segment, leaving every page header intact."""
    for page in (4, 5, 6):
        _patch(path, page * PAGE + 40, b"\xa5" * (PAGE - 80))


def test_damaged_records_behind_valid_headers_fail_latest_after_recovery(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    _damage_records(rb.parent / "wal" / seg_of(corpus, 3))
    res = drill(rb)
    ev = failed_with(res, drill_home, "recovery ended early")
    assert res.failed_state == "await_ready"
    assert ev["recovery"]["complete"] is False
    assert ev["recovery"]["expected_last_transaction"]["at"].startswith(
        corpus.commit_times[5].strftime("%Y-%m-%dT%H:%M:%S")
    )


def test_damaged_records_before_a_time_target_fail_as_incomplete_recovery(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(4), 4 * BATCH_ROWS)
    _damage_records(rb.parent / "wal" / seg_of(corpus, 3))
    res = drill(rb)
    failed_with(res, drill_home, "recovery ran out of WAL before reaching target_time")


def test_verify_full_finds_damaged_records_before_restoring(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None, verify="full")
    _damage_records(rb.parent / "wal" / seg_of(corpus, 3))
    res = drill(rb)
    failed_with(res, drill_home, "is damaged", "recovery would stop there")
    assert res.failed_state == "preflight"


# ------------------------------------------------------------------ permissions


def test_segment_the_server_user_cannot_read_is_staged_privately_when_root(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("as root the drill reads for the server user; otherwise it is the server user")
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(3), 3 * BATCH_ROWS)
    (rb.parent / "wal" / seg_of(corpus, 2)).chmod(0o000)
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    target = evidence_of(res, drill_home)["target"]
    assert target["wal_read_from"].startswith(tempfile.gettempdir()) and "restore-drill-" in target["wal_read_from"]


def test_segment_unreadable_by_the_reader_is_a_named_defect(corpus: CorpusSource, tmp_path: Path) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    for f in (rb.parent / "wal").iterdir():
        f.chmod(0o644)
    path = rb.parent / "wal" / seg_of(corpus, 2)
    path.chmod(0o600)
    os.chown(path, 0, 0)
    backup = inspect_base_backup(rb.parent / "base")
    nobody = (65534, [65534])
    with pytest.raises(BackupDefect, match=f"{seg_of(corpus, 2)}: not readable by the user the server runs as"):
        plan_pitr(backup, rb.parent / "wal", None, find_pg_binaries().tool("pg_waldump"), server_ids=nobody)


# ------------------------------------------------------------------ the base backup against its manifest


def test_plain_base_backup_file_altered_after_its_manifest_fails(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    conf = rb.parent / "base" / "postgresql.conf"
    text = conf.read_bytes()
    conf.write_bytes(text.replace(b"#", b";", 1))  # same size, other bytes
    failed_with(drill(rb), drill_home, "does not match its manifest", "postgresql.conf")


def test_tar_base_backup_member_altered_after_its_manifest_fails(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None, base="base-tar")
    tar_path = rb.parent / "base-tar" / "base.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(tar_path, "w") as out:
        for m, data in members:
            edited = data.replace(b"#", b";", 1) if m.name == "postgresql.conf" and data is not None else data
            out.addfile(m, None if edited is None else io.BytesIO(edited))
    failed_with(drill(rb), drill_home, "postgresql.conf: CRC32C checksum mismatch")


# ------------------------------------------------------------------ drill validate runs the same checks


def test_drill_validate_finds_a_damaged_archive_before_the_night_of_the_drill(
    corpus: CorpusSource, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(structlog.reset_defaults)
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    assert main(["validate", str(rb)]) == 0
    os.truncate(rb.parent / "wal" / seg_of(corpus, 4), 4096)
    assert main(["validate", str(rb)]) == 1
    err = capsys.readouterr().err
    assert f"{seg_of(corpus, 4)}: 4096 bytes, expected {SEG}" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ resources and the verdict's reasons


def test_scratch_too_small_is_refused_with_the_numbers(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    small = Path(tempfile.mkdtemp(prefix="rd-small-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        small.chmod(0o755)
        rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
        res = drill(rb, scratch_root=small)
        assert res.exit_code == 2 and res.failed_state == "preflight", res.to_json()
        assert "MiB free; this restore needs about" in (res.error or "")
        assert len(res.error or "") < 400
        assert not list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=False)
        small.rmdir()


def test_a_missed_rpo_objective_is_named_in_the_summary_and_json(
    corpus: CorpusSource, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    rb = copy_corpus(corpus, tmp_path / "c", "latest", 6 * BATCH_ROWS)
    rb.write_text(rb.read_text().replace("{rto_seconds: 120}", "{rto_seconds: 120, rpo_seconds: 1}"))
    request.addfinalizer(structlog.reset_defaults)  # main() logs to the captured stream, closed after this test
    assert main(["run", str(rb), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "failed" and out["rto_met"] is True and out["rpo_met"] is False
    assert [r for r in out["reasons"] if r.startswith("RPO objective missed:")] == out["reasons"]
    assert main(["run", str(rb)]) == 1
    err = capsys.readouterr().err
    assert "failed because:" in err and "RPO objective missed" in err and "MISSED" in err


def test_target_time_the_archive_cannot_prove_fails(corpus: CorpusSource, tmp_path: Path, drill_home: Path) -> None:
    late: datetime = corpus.commit_times[-1] + timedelta(seconds=1)
    rb = copy_corpus(corpus, tmp_path / "c", late, None)
    failed_with(drill(rb), drill_home, "not before any archived commit")


def test_unwritable_evidence_directory_is_refused_before_anything_starts(
    corpus: CorpusSource,
    tmp_path: Path,
    drill_home: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    request.addfinalizer(structlog.reset_defaults)
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", str(rb), "--evidence-dir", str(blocker / "evidence")]) == 2
    err = capsys.readouterr().err
    assert f"evidence directory {blocker / 'evidence'} is not writable" in err and "Traceback" not in err
    assert not (drill_home / "runs").exists() or not list((drill_home / "runs").iterdir())  # no run was started


def test_scratch_directory_from_the_runbook_holds_the_restore(
    corpus: CorpusSource, tmp_path: Path, drill_home: Path, request: pytest.FixtureRequest
) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="rd-scratch-"))  # reachable by the server's user, unlike tmp_path
    scratch.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    rb = copy_corpus(corpus, tmp_path / "c", corpus.target_after(1), BATCH_ROWS)
    rb.write_text(rb.read_text() + f"scratch_dir: {scratch}\n")
    res = drill(rb)
    assert res.verdict == "passed", res.to_json()
    assert evidence_of(res, drill_home)["target"]["datadir"].startswith(str(scratch))
    assert not list(scratch.iterdir())  # torn down
    with pytest.raises(PreflightError, match=r"scratch directory .*nowhere does not exist"):
        drill(rb, scratch_root=tmp_path / "nowhere")


def test_scratch_the_server_user_cannot_reach_is_refused(corpus: CorpusSource, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root drill runs its server as another user")
    rb = copy_corpus(corpus, tmp_path / "c", "latest", None)
    res = drill(rb, scratch_root=tmp_path)  # pytest's tmp_path sits under a 0700 directory
    assert res.exit_code == 2 and "not reachable by the user 'postgres'" in (res.error or "")
