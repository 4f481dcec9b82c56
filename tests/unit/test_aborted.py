"""The record of a killed run, from its journal alone: what it reached, what it left, never a pass."""

from __future__ import annotations

from typing import Any

from drills.aborted import aborted_predicate

SCRATCH = {"kind": "scratch-dir", "id": "/tmp/restore-drill-r1", "backend": "local-fs", "attrs": {}}
SERVER = {"kind": "postgres-server", "id": "/tmp/restore-drill-r1/pg/data", "backend": "local-postgres", "attrs": {}}
VOLUME = {"kind": "volume", "id": "vol-1", "backend": "local-postgres", "attrs": {}}


def ev(seq: int, event: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "at": f"2026-12-01T01:00:{seq:02d}.000Z", "run_id": "r1", "event": event, **fields}


EVENTS = [
    ev(1, "run_started", pid=999_999_999, runbook={"name": "orders", "sha256": "ab" * 32, "path": "/rb.yaml"},
       source={"kind": "postgres-pitr"}, tool_version="0.1.0"),
    ev(2, "resource_registered", resource=SCRATCH),
    ev(3, "state_entered", state="preflight", attempt=1),
    ev(4, "state_exited", state="preflight", attempt=1, started_at="2026-12-01T01:00:03.000Z", duration_ms=900,
       outcome="ok", error=None),
    ev(5, "state_entered", state="restore", attempt=1),
    ev(6, "resource_registered", resource=SERVER),
    ev(7, "resource_registered", resource=VOLUME),
    # later, `drill teardown` removed two of three
    ev(8, "teardown_resumed", outstanding=[SCRATCH, SERVER, VOLUME]),
    ev(9, "resource_removed", resource=SERVER, verified_at="2026-12-01T01:00:09.000Z", detail="stopped"),
    ev(10, "teardown_failed", resource=VOLUME, error="still attached"),
    ev(11, "resource_removed", resource=SCRATCH, verified_at="2026-12-01T01:00:11.000Z", detail="removed"),
]  # fmt: skip


def test_the_record_says_how_far_the_run_got_and_what_it_left() -> None:
    p = aborted_predicate("r1", EVENTS, recorded_by="drill teardown", now="2026-12-01T02:00:00.000Z", host="h",
                          initiated_by="ops")  # fmt: skip
    assert p["results"]["verdict"] == "aborted" and p["results"]["rto_met"] is False
    assert p["journal"]["stopped_in_state"] == "restore"
    assert p["journal"]["states_entered"] == ["preflight", "restore"]
    assert [e["state"] for e in p["timeline"]] == ["preflight"] and p["timeline"][0]["duration_ms"] == 900
    assert [r["id"] for r in p["journal"]["resources_registered"]] == [SCRATCH["id"], SERVER["id"], "vol-1"]
    assert [(r["id"], r["deleted"]) for r in p["teardown"]["resources"]] == [
        (SERVER["id"], True),
        (SCRATCH["id"], True),
        ("vol-1", False),
    ]
    assert [r["id"] for r in p["teardown"]["outstanding"]] == ["vol-1"] and p["teardown"]["all_deleted"] is False
    assert p["drill"]["aborted_at"] == "2026-12-01T01:00:11.000Z" and p["drill"]["started_at"].endswith("01.000Z")
    assert "stopped in state restore" in p["results"]["reasons"][0]
    assert "drill teardown r1" in p["results"]["reasons"][1]


def test_a_journal_with_nothing_but_its_start_still_gives_a_record() -> None:
    p = aborted_predicate("r1", EVENTS[:1], recorded_by="x", now="n", host="h", initiated_by="u")
    assert p["results"]["verdict"] == "aborted" and p["journal"]["stopped_in_state"] is None
    assert p["teardown"]["outstanding"] == [] and p["teardown"]["all_deleted"] is True
    assert p["runbook"]["name"] == "orders"
