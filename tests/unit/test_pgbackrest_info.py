"""`kind: pgbackrest`: reading `pgbackrest info --output=json`, choosing the set, refusing bad sources.

The info documents are shaped like pgBackRest 2.45's output (captured from a real repository).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from drills.engines.postgres.pgbackrest import choose_set, parse_info, wal_names
from drills.errors import BackupDefect, RunbookError
from drills.runbook import parse_runbook

T0 = 1_796_096_600  # epoch seconds of the full set's start


def _set(label: str, kind: str, start: int, stop: int, wal: str, *, error: bool = False, db: int = 1) -> dict[str, Any]:
    return {
        "archive": {"start": wal, "stop": wal},
        "database": {"id": db, "repo-key": 1},
        "error": error,
        "info": {"delta": 100, "repository": {"delta": 10, "size": 30}, "size": 2000},
        "label": label,
        "lsn": {"start": "0/2000028", "stop": "0/2000100"},
        "prior": None,
        "timestamp": {"start": start, "stop": stop},
        "type": kind,
    }


def info(*sets: dict[str, Any], code: int = 0, archive: bool = True) -> str:
    return json.dumps(
        [
            {
                "archive": [{"database": {"id": 1}, "id": "15-1", "min": "000000010000000000000001",
                             "max": "000000010000000000000009"}] if archive else [],
                "backup": list(sets),
                "db": [{"id": 1, "system-id": 7714176292443024924, "version": "15"}],
                "name": "shop",
                "status": {"code": code, "message": "ok" if code == 0 else "missing stanza path"},
            }
        ]
    )  # fmt: skip


FULL = _set("F1", "full", T0, T0 + 10, "000000010000000000000002")
INCR = _set("F1_I1", "incr", T0 + 100, T0 + 110, "000000010000000000000004")


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_info_gives_sets_oldest_first_with_sizes_and_the_archive_range() -> None:
    got = parse_info(info(INCR, FULL), "shop")
    assert [s.label for s in got.sets] == ["F1", "F1_I1"]
    assert got.sets[1].type == "incr" and got.sets[1].size_bytes == 2000 and got.sets[1].repo_size_bytes == 30
    assert (got.wal_min, got.wal_max, got.pg_version) == ("000000010000000000000001", "000000010000000000000009", "15")


def test_a_stanza_in_error_or_absent_is_a_backup_defect() -> None:
    with pytest.raises(BackupDefect, match="missing stanza path"):
        parse_info(info(FULL, code=1), "shop")
    with pytest.raises(BackupDefect, match="no stanza 'other'"):
        parse_info(info(FULL), "other")


def test_the_newest_set_that_ended_before_the_target_is_chosen() -> None:
    i = parse_info(info(FULL, INCR), "shop")
    assert choose_set(i, at(T0 + 50), None).label == "F1"
    assert choose_set(i, at(T0 + 110), None).label == "F1_I1"  # ended exactly at the target
    assert choose_set(i, at(T0 + 109), None).label == "F1"  # still running at the target
    assert choose_set(i, None, None).label == "F1_I1"


def test_a_target_before_every_set_is_outside_the_restorable_range() -> None:
    i = parse_info(info(FULL, INCR), "shop")
    with pytest.raises(BackupDefect, match=r"outside the restorable range.*oldest backup set F1"):
        choose_set(i, at(T0 + 5), None)


def test_a_named_set_must_exist_be_clean_and_end_before_the_target() -> None:
    bad = _set("F0", "full", T0 - 100, T0 - 90, "000000010000000000000001", error=True)
    i = parse_info(info(bad, FULL, INCR), "shop")
    assert choose_set(i, at(T0 + 500), "F1").label == "F1"
    with pytest.raises(BackupDefect, match=r"no backup set 'nope'.*F1_I1"):
        choose_set(i, None, "nope")
    with pytest.raises(BackupDefect, match="page checksum errors"):
        choose_set(i, None, "F0")
    with pytest.raises(BackupDefect, match="before the end of backup set F1_I1"):
        choose_set(i, at(T0 + 50), "F1_I1")


def test_sets_with_checksum_errors_are_never_chosen_by_default() -> None:
    bad = _set("F2", "full", T0 + 200, T0 + 210, "000000010000000000000006", error=True)
    i = parse_info(info(FULL, bad), "shop")
    assert choose_set(i, None, None).label == "F1"
    with pytest.raises(BackupDefect, match="no usable backup set"):
        choose_set(parse_info(info(bad), "shop"), None, None)


def test_sets_of_an_older_cluster_are_ignored() -> None:
    old = _set("F0", "full", T0 - 100, T0 - 90, "000000010000000000000001", db=0)
    assert [s.label for s in parse_info(info(old, FULL), "shop").sets] == ["F1"]


def test_wal_names_cross_a_log_file_boundary() -> None:
    assert wal_names("0000000100000000000000FE", "000000010000000100000001", 0x100) == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]


BASE = "name: x\nobjectives: {rto_seconds: 60}\nsource:\n  kind: pgbackrest\n  stanza: shop\n  target_time: latest\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "exactly one of config"),
        ("  config: /etc/pgbackrest.conf\n  repo_path: /r\n", "exactly one of config"),
        ("  repo_path: /r\n  options: {pg1-path: /var/lib/postgresql/15/main}\n", "set by the drill itself"),
        ("  repo_path: /r\n  options: {repo1-s3-key-secret: hunter2}\n", "PGBACKREST_REPO1_S3_KEY_SECRET"),
        ("  repo_path: /r\n  options: {'--delta': y}\n", "not a pgBackRest option name"),
        ("  repo_path: /r\n  process_max: 0\n", "greater than or equal to 1"),
    ],
)
def test_bad_sources_are_refused_with_the_field_named(extra: str, message: str) -> None:
    with pytest.raises(RunbookError, match=message) as exc:
        parse_runbook(BASE + extra, "rb.yaml")
    assert "rb.yaml:" in str(exc.value)


def test_a_secret_never_reaches_the_error_message() -> None:
    with pytest.raises(RunbookError) as exc:
        parse_runbook(BASE + "  repo_path: /r\n  options: {repo1-cipher-pass: hunter2}\n", "rb.yaml")
    assert "hunter2" not in str(exc.value)
