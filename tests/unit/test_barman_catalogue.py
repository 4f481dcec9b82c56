"""`kind: barman`: reading Barman 3.4's JSON (list-backups, show-backup, check), choosing the backup,
refusing bad sources. The documents are shaped like Barman 3.4.0's output captured from a real catalogue.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from drills.engines.postgres.barman_catalogue import (
    choose_backup,
    classify_check,
    parse_list_backups,
    parse_show_backup,
    parse_xlogdb,
)
from drills.errors import BackupDefect, PreflightError, RunbookError
from drills.runbook import parse_runbook

T0 = 1_796_099_250  # 2026-12-01 04:27:30 UTC


def listed(*rows: tuple[str, str, int]) -> str:
    return json.dumps(
        {
            "shop": [
                {"backup_id": i, "end_time_timestamp": str(end), "size_bytes": 1, "status": status}
                for i, status, end in rows
            ]
        }
    )


SHOW = {
    "shop": {
        "backup_id": "20261201T042728",
        "base_backup_information": {
            "begin_lsn": "0/2000028",
            "begin_time": "2026-12-01 04:27:28.164318+00:00",
            "begin_wal": "000000010000000000000002",
            "disk_usage_bytes": 23129966,
            "end_lsn": "0/3000000",
            "end_time": "2026-12-01 04:27:30.475738+00:00",
            "end_wal": "000000010000000000000002",
            "timeline": 1,
        },
        "postgresql_version": 150018,
        "status": "DONE",
        "wal_information": {"disk_usage_bytes": 50331648, "last_available": "000000010000000000000005"},
    }
}


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_show_backup_gives_times_wal_range_sizes_and_the_newest_archived_segment() -> None:
    b = parse_show_backup(json.dumps(SHOW), "shop")
    assert b.backup_id == "20261201T042728" and b.status == "DONE" and b.pg_version == 150018
    assert b.begin == datetime(2026, 12, 1, 4, 27, 28, 164318, UTC)
    assert b.end == datetime(2026, 12, 1, 4, 27, 30, 475738, UTC)
    assert (b.begin_wal, b.end_wal, b.last_available_wal) == (
        "000000010000000000000002",
        "000000010000000000000002",
        "000000010000000000000005",
    )
    assert (b.size_bytes, b.wal_size_bytes) == (23129966, 50331648)
    assert b.facts()["end_time"].startswith("2026-12-01T04:27:30")


def test_a_catalogue_entry_without_its_wal_range_is_a_backup_defect() -> None:
    doc: dict[str, Any] = json.loads(json.dumps(SHOW))
    del doc["shop"]["base_backup_information"]["begin_wal"]
    with pytest.raises(BackupDefect, match="begin_wal"):
        parse_show_backup(json.dumps(doc), "shop")


def test_an_unknown_server_is_named() -> None:
    with pytest.raises(BackupDefect, match="no server 'other'"):
        parse_list_backups(listed(("A", "DONE", T0)), "other")


BACKUPS = parse_list_backups(
    listed(
        ("20261201T030000", "DONE", T0), ("20261201T040000", "FAILED", T0 + 50), ("20261201T050000", "DONE", T0 + 100)
    ),
    "shop",
)


def test_the_newest_done_backup_before_the_target_is_chosen() -> None:
    assert choose_backup(BACKUPS, "shop", at(T0 + 99), None) == "20261201T030000"
    assert choose_backup(BACKUPS, "shop", at(T0 + 100), None) == "20261201T050000"
    assert choose_backup(BACKUPS, "shop", None, None) == "20261201T050000"


def test_a_target_before_every_backup_names_the_oldest() -> None:
    with pytest.raises(BackupDefect, match=r"outside the restorable range.*20261201T030000"):
        choose_backup(BACKUPS, "shop", at(T0 - 1), None)


def test_a_failed_or_unknown_named_backup_is_refused() -> None:
    with pytest.raises(BackupDefect, match="status FAILED"):
        choose_backup(BACKUPS, "shop", None, "20261201T040000")
    with pytest.raises(BackupDefect, match=r"no backup 'nope'.*20261201T030000"):
        choose_backup(BACKUPS, "shop", None, "nope")


def test_a_catalogue_without_a_done_backup_fails() -> None:
    with pytest.raises(BackupDefect, match="no completed"):
        choose_backup([("X", "FAILED", at(T0))], "shop", None, None)


def check(**statuses: str) -> str:
    return json.dumps({"shop": {k: {"hint": "why", "status": v} for k, v in statuses.items()}})


def test_check_failures_about_reaching_the_source_are_recorded_not_fatal() -> None:
    got = classify_check(check(postgresql="FAILED", archive_mode="FAILED", directories="OK"), "shop")
    assert got["failed_not_about_the_repository"] == ["archive_mode", "postgresql"] and got["checks"] == 3


def test_check_failures_about_the_catalogue_fail_the_drill() -> None:
    with pytest.raises(BackupDefect, match="systemid_coherence FAILED"):
        classify_check(check(postgresql="FAILED", systemid_coherence="FAILED"), "shop")
    with pytest.raises(PreflightError, match="directories FAILED"):
        classify_check(check(directories="FAILED"), "shop")


RB = """
name: b
source: {kind: barman, server: shop, config: /etc/barman.conf, target_time: %s}
objectives: {rto_seconds: 60, rpo_seconds: 60}
validators: {smoke: [{name: one, sql: select 1, expect: 1}]}
"""


def test_a_naive_target_time_and_unknown_fields_are_refused() -> None:
    assert parse_runbook(RB % "latest", "rb.yaml").source.kind == "barman"
    with pytest.raises(RunbookError, match="timezone"):
        parse_runbook(RB % "2026-11-26T12:00:00", "rb.yaml")
    with pytest.raises(RunbookError, match=r"extra|not permitted"):
        parse_runbook((RB % "latest").replace("server: shop,", "server: shop, pg_data: /var/lib/pg,"), "rb.yaml")


def test_xlogdb_gives_each_segments_compression_and_skips_torn_lines() -> None:
    text = (
        "000000010000000000000002\t16777216\t1796099249.09\tNone\n"
        "000000010000000000000002.00000028.backup\t338\t1796099249.12\tNone\n"
        "000000010000000000000003\t4011\t1796099251.78\tgzip\n"
        "00000001000000000000"  # a line Barman is still writing
    )
    assert parse_xlogdb(text) == {
        "000000010000000000000002": None,
        "000000010000000000000002.00000028.backup": None,
        "000000010000000000000003": "gzip",
    }
