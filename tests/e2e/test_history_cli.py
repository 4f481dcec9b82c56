"""`drill history` over signed evidence: only verified records become rows, and the cache never hides an edit."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drills.evidence import generate_keypair, load_signer, subject_for_bytes, write_evidence

T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


def drill(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "RESTORE_DRILLS_HOME": str(home)},
    )


def record(i: int, runbook: str, verdict: str = "passed", flag: bool = False) -> dict[str, Any]:
    at = T0 + timedelta(days=i)
    return {
        "drill": {"id": f"run-{runbook}-{i:03d}", "finished_at": at.isoformat().replace("+00:00", "Z")},
        "runbook": {"name": runbook},
        "recovery_point": {"kind": "pitr", "base_backup": {"size_bytes": (10 + i) * 10**9}},
        "results": {
            "verdict": verdict,
            "achieved_rto_ms": 60_000 + 1000 * i,
            "rto_phases_ms": {"restore": 40_000, "await_ready": 10_000 + 1000 * i, "connect": 1_000, "validate": 9_000},
            "achieved_rpo_ms": 2_500,
            "rto_objective_ms": 300_000,
        },
        "regression": {"flag": flag, "trend": {"direction": "increasing"}, "projection": {"crosses_objective_at": None}}
        if i
        else None,
    }


@pytest.fixture
def evidence(tmp_path: Path) -> tuple[Path, Path, Path]:
    keys, ev, home = tmp_path / "keys", tmp_path / "ev", tmp_path / "home"
    keys.mkdir()
    home.mkdir(mode=0o700)
    generate_keypair(keys / "drill.key")
    signer = load_signer(keys / "drill.key")
    for i in range(12):
        rb = "orders" if i % 3 else "billing"
        write_evidence(record(i, rb, flag=i == 7), [subject_for_bytes(f"runbook:{rb}", b"x")], ev, f"r{i:03d}", signer)
    return ev, keys / "drill.pub", home


def test_csv_rows_are_the_verified_records_of_one_runbook_oldest_first(evidence: tuple[Path, Path, Path]) -> None:
    ev, pub, home = evidence
    res = drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--runbook", "orders", "--csv", home=home)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["run_id"] for r in rows] == [f"run-orders-{i:03d}" for i in (1, 2, 4, 5, 7, 8, 10, 11)]
    seven = rows[4]
    assert (seven["rto_ms"], seven["await_ready_ms"], seven["rpo_ms"]) == ("67000", "17000", "2500")
    assert (seven["restored_bytes"], seven["rto_objective_ms"], seven["regression"]) == (
        "17000000000",
        "300000",
        "True",
    )
    assert seven["finished_at"] == "2026-06-08T02:00:00Z" and seven["trend"] == "increasing"


def test_since_and_json(evidence: tuple[Path, Path, Path]) -> None:
    ev, pub, home = evidence
    res = drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--since", "2026-06-10", "--json", home=home)
    assert res.returncode == 0, res.stderr
    assert [r["run_id"] for r in json.loads(res.stdout)] == ["run-billing-009", "run-orders-010", "run-orders-011"]
    table = drill("history", "--evidence-dir", str(ev), "--key", str(pub), home=home)
    assert table.returncode == 0 and "FLAG" in table.stdout
    # orders: RTO = 50 s + 1 s per GB, +1 GB/day: the 300 s objective is at 250 GB, 229 days after
    # 2026-06-12 (21 GB) = 2027-01-27; 8 strictly increasing drills: p = 2 / 8! = 4.96e-05
    assert (
        "orders: trend increasing (+1.00s/day, Mann-Kendall p=4.96e-05, 8 drills); at +30.4 GB/month, "
        "RTO reaches the 5min objective around 2027-01" in table.stdout
    )
    assert "billing: 4 drill(s) with a measured RTO; a trend needs 5" in table.stdout


def test_an_edited_record_is_not_shown_even_after_it_was_cached(evidence: tuple[Path, Path, Path]) -> None:
    ev, pub, home = evidence
    assert drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--json", home=home).returncode == 0
    assert list((home / "cache").glob("history-*.json"))  # the cache now knows every record
    target = ev / "r004.evidence.json"
    env = json.loads(target.read_text())
    target.write_text(json.dumps(env, indent=2, sort_keys=True).replace('"keyid"', '"keyid" ', 1))
    res = drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--json", home=home)
    assert res.returncode == 1
    assert "run-orders-004" not in res.stdout and len(json.loads(res.stdout)) == 11
    assert "NOT VERIFIED (not shown)" in res.stderr and "r004.evidence.json" in res.stderr


def test_records_signed_by_another_key_are_refused(evidence: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ev, _pub, home = evidence
    generate_keypair(tmp_path / "other.key")
    res = drill("history", "--evidence-dir", str(ev), "--key", str(tmp_path / "other.pub"), "--json", home=home)
    assert res.returncode == 1 and json.loads(res.stdout) == [] and res.stderr.count("NOT VERIFIED") == 12


def test_bad_input_is_exit_2(evidence: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ev, pub, home = evidence
    res = drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--since", "yesterday", home=home)
    assert res.returncode == 2 and "--since 'yesterday': not a date or a duration" in res.stderr
    res = drill("history", "--evidence-dir", str(tmp_path / "nope"), "--key", str(pub), home=home)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_plot_draws_the_runbook_trend_as_svg_and_png(evidence: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ev, pub, home = evidence
    base = ("history", "--evidence-dir", str(ev), "--key", str(pub), "--runbook", "orders", "--csv")
    res = drill(*base, "--plot", str(tmp_path / "rto.svg"), home=home)
    assert res.returncode == 0, res.stderr
    svg = (tmp_path / "rto.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "RTO objective" in svg and "restored size (GB)" in svg
    assert "regression" in svg  # drill 7 is flagged in its record
    assert svg.count("2026-06-") >= 8  # one tick per drill of orders
    assert drill(*base, "--plot", str(tmp_path / "rto.png"), home=home).returncode == 0
    from PIL import Image

    with Image.open(tmp_path / "rto.png") as img:
        assert img.format == "PNG" and img.size == (800, 320)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20  # not blank
    bad = drill("history", "--evidence-dir", str(ev), "--key", str(pub), "--plot", str(tmp_path / "x.svg"), home=home)
    assert bad.returncode == 2 and "give --runbook" in bad.stderr
    bad = drill(*base, "--plot", str(tmp_path / "x.gif"), home=home)
    assert bad.returncode == 2 and ".svg or .png" in bad.stderr
