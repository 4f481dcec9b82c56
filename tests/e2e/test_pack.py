"""`drill pack` and `drill verify --pack` as an auditor uses them, the report opened in a real Chromium.

A month of drills is signed here with a real key (the same writer `drill run`
uses), with failures, a record signed by another key and one renamed to
another run's file name planted among them. The pack must count only what
verifies, show the records' numbers, render in a browser, and refuse any
edit made after it was built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from drills.evidence.keys import generate_keypair, load_signer
from drills.evidence.store import write_evidence

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
FAILED_DAYS = {6, 13, 14}  # orders drills that failed; day 15 remediates 13 and 14
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def predicate(run_id: str, runbook: str, finished: datetime, verdict: str, rto_ms: int, seq: int) -> dict[str, Any]:
    phases = {"restore": rto_ms - 90_000, "await_ready": 60_000, "validate": 30_000}
    return {
        "schema_version": 1,
        "drill": {
            "id": run_id,
            "started_at": (finished - timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
            "finished_at": finished.isoformat().replace("+00:00", "Z"),
        },
        "runbook": {
            "name": runbook,
            "sha256": "ab" * 32,
            "path": f"runbooks/{runbook}.yaml",
            "tags": {},
            "schedule_every_seconds": 7 * 86400,
        },
        "source": {
            "kind": "postgres-pitr",
            "base_backup": f"/backups/{runbook}/base",
            "wal_archive": "/wal",
            "target_time": "latest",
        },
        "results": {
            "verdict": verdict,
            "achieved_rto_ms": rto_ms,
            "rto_objective_ms": 1_800_000,
            "rto_met": rto_ms <= 1_800_000,
            "rto_phases_ms": phases,
            "achieved_rpo_ms": 4_000,
            "rpo_objective_ms": 300_000,
            "rpo_met": True,
            "reasons": []
            if verdict == "passed"
            else [{"kind": "finding_failed", "check": "row_counts: orders rows", "message": "expected 200, got 54"}],
        },
        "chain": {"id": f"runbook:{runbook}", "seq": seq, "prev_envelope_sha256": None},
        "interrupted": False,
    }


def sign(pred: dict[str, Any], out: Path, key: Path) -> Path:
    subject = [{"name": pred["runbook"]["path"], "digest": {"sha256": pred["runbook"]["sha256"]}}]
    return write_evidence(pred, subject, out, pred["drill"]["id"], load_signer(key))


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pack")
    key, other = root / "drill.key", root / "other.key"
    generate_keypair(key)
    generate_keypair(other)
    ev = root / "evidence"
    expected: dict[str, dict[str, Any]] = {}
    for day in range(30):  # orders: one drill a day in November, RTO growing 10 s a day
        run_id = f"orders-{day + 1:02d}"
        verdict = "failed" if day + 1 in FAILED_DAYS else "passed"
        rto = 600_000 + 10_000 * day
        sign(predicate(run_id, "orders", START + timedelta(days=day), verdict, rto, day + 1), ev, key)
        expected[run_id] = {"verdict": verdict, "rto_ms": rto}
    for i in range(4):  # billing: weekly, all passed
        run_id = f"billing-{i + 1}"
        sign(predicate(run_id, "billing", START + timedelta(days=7 * i, hours=1), "passed", 300_000, i + 1), ev, key)
        expected[run_id] = {"verdict": "passed", "rto_ms": 300_000}
    # planted: a passing record signed by another key, and a valid record renamed to another run's name
    sign(predicate("planted-1", "orders", START + timedelta(days=3, hours=5), "passed", 1_000, 999), ev, other)
    (ev / "orders-99.evidence.json").write_bytes((ev / "orders-05.evidence.json").read_bytes())
    # outside the period
    sign(predicate("orders-oct", "orders", START - timedelta(days=3), "passed", 500_000, 0), ev, key)
    from drills.evidence.chain import write_head

    write_head(ev, "orders", ev / "orders-30.evidence.json", 30, load_signer(key), at="2026-11-30T02:00:00Z")
    return {"root": root, "evidence": ev, "pub": root / "drill.pub", "expected": expected}


def drill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def make_pack(month: dict[str, Any], out: Path) -> subprocess.CompletedProcess[str]:
    return drill(
        "pack",
        "--evidence-dir",
        str(month["evidence"]),
        "--key",
        str(month["pub"]),
        "--since",
        "2026-11-01",
        "--until",
        "2026-12-01",
        "--out",
        str(out),
    )


class Cells(HTMLParser):
    """Every ``data-run``/``data-field``/``data-value`` cell of a page, with its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], tuple[str, str]] = {}
        self._open: tuple[str, str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "data-field" in a:
            self._open = (a.get("data-run") or "", a.get("data-field") or "", a.get("data-value") or "")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open:
            run, field, value = self._open
            self.cells[(run, field)] = (value, "".join(self._text))
            self._open = None


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is installed by scripts/setup.sh"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": "/tmp"},
    )


def test_the_report_renders_in_chromium_with_exactly_the_verified_records(
    month: dict[str, Any], tmp_path: Path
) -> None:
    res = make_pack(month, tmp_path / "pack")
    assert res.returncode == 0, res.stderr
    assert "34 verified record(s)" in res.stdout
    assert "not included (did not verify): planted-1.evidence.json" in res.stdout
    assert "not included (did not verify): orders-99.evidence.json" in res.stdout
    report = tmp_path / "pack" / "report.html"

    dom = chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Cells()
    page.feed(dom.stdout)
    shown = {run for run, field in page.cells if field == "verdict"}
    assert shown == set(month["expected"])  # no planted, renamed or out-of-period record
    for run_id, want in month["expected"].items():
        assert page.cells[(run_id, "verdict")][0] == want["verdict"]
        assert page.cells[(run_id, "rto_ms")][0] == str(want["rto_ms"])
    assert page.cells[("orders-08", "rto_ms")][1] == "11m 10s (met)"  # 600 s + 7 x 10 s
    assert page.cells[("runbook:orders", "drills")][0] == "30"
    assert page.cells[("runbook:orders", "passed")][0] == "27"
    assert page.cells[("runbook:orders", "required")][0] == "4"  # 30 days / 7 days
    assert page.cells[("runbook:orders", "cadence_met")][0] == "true"
    assert page.cells[("runbook:billing", "passed")][0] == "4"
    assert page.cells[("runbook:orders", "worst_rto_ms")][0] == str(600_000 + 10_000 * 29)
    assert page.cells[("orders-13", "remediated_by")][0] == "orders-15"
    assert page.cells[("orders-14", "remediated_by")][0] == "orders-15"
    assert "planted-1.evidence.json" in dom.stdout and "another run" in dom.stdout

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri())
    from PIL import Image

    with Image.open(shot) as img:
        colors = {c for _n, c in img.convert("RGB").getcolors(maxcolors=1 << 20) or []}
    assert len(colors) > 50, "the screenshot is (nearly) blank"
    assert (242, 242, 242) in colors  # table headers: the page's style passed its own CSP
    assert (31, 119, 180) in colors  # the chart's first phase: the data: image rendered


def test_the_page_loads_nothing_and_runs_nothing(month: dict[str, Any], tmp_path: Path) -> None:
    assert make_pack(month, tmp_path / "pack").returncode == 0
    html = (tmp_path / "pack" / "report.html").read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp and "default-src 'none'" in csp.group(1) and "script-src" not in csp.group(1)
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_verify_pack_accepts_the_pack_and_refuses_every_edit(month: dict[str, Any], tmp_path: Path) -> None:
    pack = tmp_path / "pack.zip"
    assert make_pack(month, pack).returncode == 0
    ok = drill("verify", "--pack", str(pack), "--key", str(month["pub"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "34 record(s) verified" in ok.stdout

    def edited(name: str, change: Any, *, update_manifest: bool = True) -> subprocess.CompletedProcess[str]:
        d = tmp_path / f"edit-{name.replace('/', '_')}-{update_manifest}"
        with zipfile.ZipFile(pack) as z:
            z.extractall(d)
        change(d / name)
        if update_manifest:  # a forger who also fixes the digests
            import hashlib

            m = json.loads((d / "manifest.json").read_text())
            m["files"] = {
                p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in d.rglob("*")
                if p.is_file() and p.name != "manifest.json"
            }
            (d / "manifest.json").write_text(json.dumps(m))
        return drill("verify", "--pack", str(d), "--key", str(month["pub"]))

    def better_rto(p: Path) -> None:  # the slowest drill (600 s + 29 x 10 s) made to look fast
        text = p.read_text()
        assert "14m 50s (met)" in text
        p.write_text(text.replace("14m 50s (met)", "4m 50s (met)"))

    res = edited("report.html", better_rto, update_manifest=False)
    assert res.returncode == 1 and "report.html was changed" in res.stdout
    res = edited("report.html", better_rto)
    assert res.returncode == 1 and "report.html is not what the verified envelopes render to" in res.stdout
    res = edited("envelopes/orders-13.evidence.json", lambda p: p.unlink())  # hide a failure
    assert res.returncode == 1 and "report.html is not what" in res.stdout
    res = edited("envelopes/orders-20.evidence.json", lambda p: p.write_bytes(p.read_bytes().replace(b"A", b"B", 1)))
    assert res.returncode == 1 and "orders-20" in res.stdout

    without_key = drill("verify", "--pack", str(pack))
    assert without_key.returncode == 0 and "compare them with the key ids you were given" in without_key.stdout


def test_pack_bad_input_exits_2(month: dict[str, Any], tmp_path: Path) -> None:
    res = make_pack(month, month["evidence"])  # a non-empty directory
    assert res.returncode == 2 and "already exists" in res.stderr
    res = drill(
        "pack",
        "--evidence-dir",
        str(month["evidence"]),
        "--key",
        str(month["pub"]),
        "--since",
        "November",
        "--out",
        str(tmp_path / "p"),
    )
    assert res.returncode == 2 and "--since 'November' is not a date" in res.stderr
    assert drill("verify", "--pack", str(tmp_path / "nothing")).returncode == 2


def test_the_pack_carries_the_signed_chain_head_and_refuses_an_older_one(month: dict[str, Any], tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    assert make_pack(month, pack).returncode == 0
    transcript = (pack / "verification.txt").read_text()
    assert "HEAD orders.chain-head.json" in transcript and "seq=30 run=orders-30" in transcript
    assert "FAIL chain head of billing: no chain head" in transcript
    assert (pack / "chain" / "orders.chain-head.json").is_file()
    assert drill("verify", "--pack", str(pack), "--key", str(month["pub"])).returncode == 0

    import hashlib

    from drills.evidence.chain import write_head

    # an older head put back (hiding the newest records), with the manifest fixed up by the forger
    older = tmp_path / "older"
    older.mkdir()
    write_head(
        older,
        "orders",
        month["evidence"] / "orders-20.evidence.json",
        20,
        load_signer(month["root"] / "drill.key"),
        at="2026-11-20T02:00:00Z",
    )
    (pack / "chain" / "orders.chain-head.json").write_bytes((older / "orders.chain-head.json").read_bytes())
    m = json.loads((pack / "manifest.json").read_text())
    m["files"]["chain/orders.chain-head.json"] = hashlib.sha256(
        (pack / "chain" / "orders.chain-head.json").read_bytes()
    ).hexdigest()
    (pack / "manifest.json").write_text(json.dumps(m))
    res = drill("verify", "--pack", str(pack), "--key", str(month["pub"]))
    assert res.returncode == 1 and "names seq 20, older than record seq 30" in res.stdout


def test_a_record_removed_from_the_period_fails_pack_and_verify(month: dict[str, Any], tmp_path: Path) -> None:
    """The manifest is not signed: a forger who drops a failed drill and re-packs leaves a hole in the chain."""
    import shutil

    trimmed = tmp_path / "evidence"
    shutil.copytree(month["evidence"], trimmed)
    (trimmed / "orders-13.evidence.json").unlink()  # a failed drill, hidden
    pack = tmp_path / "pack"
    made = make_pack(month | {"evidence": trimmed}, pack)
    assert made.returncode == 1, made.stdout + made.stderr
    assert "orders: chain positions 13 are missing" in made.stdout
    res = drill("verify", "--pack", str(pack), "--key", str(month["pub"]))
    assert res.returncode == 1, res.stdout
    assert "orders: chain positions 13 are missing between the pack's records" in res.stdout
    assert "billing" not in res.stdout.split("problem(s)")[0]


def test_a_disk_that_fills_up_leaves_no_half_pack(month: dict[str, Any], tmp_path: Path) -> None:
    """A half-written pack would read as a pack with fewer records: it is all or nothing, with one line saying why."""
    import resource
    import signal

    def small_files() -> None:  # every file the child writes is capped at 16 KiB: the report outgrows it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    for out in (tmp_path / "pack", tmp_path / "pack.zip"):
        args = ["pack", "--evidence-dir", str(month["evidence"]), "--key", str(month["pub"])]
        args += ["--since", "2026-11-01", "--until", "2026-12-01", "--out", str(out)]
        res = subprocess.run(
            [sys.executable, "-m", "drills.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=small_files,
            # not measured by coverage: its data file would not fit under the cap either
            env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")},
        )
        assert res.returncode == 3, res.stderr
        # the last line is ours (matplotlib may first say its font cache did not fit either)
        assert res.stderr.strip().splitlines()[-1] == (
            f"EvidenceError: {out}: the pack could not be written (File too large); nothing was left there"
        )
        assert "Traceback" not in res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == []
