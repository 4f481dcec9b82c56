"""``drill history``: one row per *verified* drill record, fast on thousands of records.

The evidence stays the only source of truth. A record becomes a row only after its envelope,
signature and canonical payload verified with the keys given; the cache
(``$RESTORE_DRILLS_HOME/cache/history-*.json``) only remembers *which bytes* verified with *which
keys*: a row is reused when the file's SHA-256 and the key file's SHA-256 are the ones it was
verified with, so an edited record is verified again (and fails), and a deleted cache is rebuilt
from the evidence. Records that fail verification are reported, never shown as rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

from drills.errors import EvidenceError
from drills.evidence.chain import Problem
from drills.evidence.s3 import S3Store, StoredObject
from drills.record_model import DrillRecord
from drills.trend import restored_bytes

__all__ = [
    "COLUMNS",
    "Row",
    "S3Read",
    "outlook",
    "read_history",
    "read_s3_history",
    "render_csv",
    "render_table",
    "row_of",
    "select",
]

CACHE_VERSION = 1
PHASES = ("restore", "await_ready", "connect", "validate")


@dataclass(frozen=True)
class Row:
    finished_at: str
    runbook: str
    run_id: str
    verdict: str
    rto_ms: int | None
    restore_ms: int | None
    await_ready_ms: int | None
    connect_ms: int | None
    validate_ms: int | None
    rpo_ms: int | None
    restored_bytes: int | None
    rto_objective_ms: int | None
    regression: bool | None  # None: no baseline yet
    trend: str | None
    projected_breach: str | None
    evidence: str


COLUMNS = tuple(Row.__dataclass_fields__)


def row_of(statement: dict[str, Any], path: Path | str) -> Row:
    """The row of one verified statement (pure); a record that does not fit its schema is an EvidenceError."""
    p = statement.get("predicate") or {}
    rec = DrillRecord.parse(p)
    res, phases = rec.results, rec.results.rto_phases_ms
    reg = rec.regression or None
    return Row(
        finished_at=rec.drill.finished_at or "",
        runbook=rec.runbook.name,
        run_id=rec.drill.id,
        verdict=res.verdict,
        rto_ms=res.achieved_rto_ms,
        restore_ms=phases.get("restore"),
        await_ready_ms=phases.get("await_ready"),
        connect_ms=phases.get("connect"),
        validate_ms=phases.get("validate"),
        rpo_ms=res.achieved_rpo_ms,
        restored_bytes=restored_bytes(p),
        rto_objective_ms=res.rto_objective_ms,
        regression=bool(reg.get("flag")) if reg else None,
        trend=((reg or {}).get("trend") or {}).get("direction"),
        projected_breach=((reg or {}).get("projection") or {}).get("crosses_objective_at"),
        evidence=str(path),
    )


def _cache_path(home: Path, evidence_dir: Path) -> Path:
    tag = hashlib.sha256(str(evidence_dir.resolve()).encode()).hexdigest()[:16]
    return home / "cache" / f"history-{tag}.json"


def _load_cache(path: Path, keys_sha: str) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or doc.get("keys_sha256") != keys_sha:
        return {}  # other keys (or a changed keyring window) may judge differently: start over
    rows = doc.get("rows")
    return rows if isinstance(rows, dict) else {}


def _save_cache(path: Path, keys_sha: str, rows: dict[str, dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".history-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "keys_sha256": keys_sha, "rows": rows}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs speed next time


def _from_cache(hit: Any, path: Path) -> Row | None:
    if not isinstance(hit, dict) or hit.get("evidence") != str(path):
        return None
    try:
        return Row(**hit)
    except TypeError:  # a cache from another version: verify again
        return None


def read_history(
    evidence_dir: Path, verifiers: Sequence[Any], keys_sha256: str, home: Path | None
) -> tuple[list[Row], list[str]]:
    """(rows of the verified records, oldest first; one problem line per record that did not verify)."""
    from drills.evidence.store import verify_evidence_bytes

    cache_file = _cache_path(home, evidence_dir) if home is not None else None
    cached = _load_cache(cache_file, keys_sha256) if cache_file else {}
    fresh: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    problems: list[str] = []
    for path in sorted(evidence_dir.glob("*.evidence.json")):
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"{path}: unreadable: {exc.strerror or exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        row = _from_cache(cached.get(digest), path)
        if row is None:
            try:
                row = row_of(verify_evidence_bytes(data, verifiers, source=str(path)), path)
            except EvidenceError as exc:
                problems.append(f"{exc}")
                continue
        fresh[digest] = asdict(row)
        rows.append(row)
    if cache_file is not None and fresh != cached:
        _save_cache(cache_file, keys_sha256, fresh)
    rows.sort(key=lambda r: (r.finished_at, r.run_id))
    return rows, problems


@dataclass
class S3Read:
    """What one ``drill history --evidence-s3`` read did: the measure of the cache."""

    listed: int = 0  # current record versions under the prefix
    checked: int = 0  # of them, judged now: fetched and verified, or refused unread (the rest: from the cache)
    deleted: int = 0  # keys whose current version is a delete marker


def _link_of(statement: dict[str, Any]) -> dict[str, Any]:
    """The part of a verified statement the chain check needs (what the S3 cache keeps, besides the row)."""
    p = statement.get("predicate") or {}
    drill = p.get("drill") or {}
    return {
        "predicate": {
            "drill": {k: drill.get(k) for k in ("id", "started_at", "finished_at")},
            "runbook": {"name": (p.get("runbook") or {}).get("name")},
            "chain": p.get("chain"),
        }
    }


def _s3_entry(store: S3Store, obj: StoredObject, verifiers: Sequence[Any]) -> dict[str, Any]:
    """Download and judge one object version: ``{"sha256", "link", "row"}``, or ``{"problem"}`` if refused."""
    from drills.evidence.chain import classify

    url = f"s3://{store.bucket}/{obj.key}"
    folder, _, name = obj.key.removeprefix(store.prefix).rpartition("/")
    try:
        data = store.fetch(obj)
    except EvidenceError as exc:
        return {"problem": {"kind": "unparsable", "message": exc.message}}
    record, problem = classify(name, data, verifiers)
    if record is not None and record.runbook != folder:
        problem = Problem("renamed", f"{name} records runbook {record.runbook!r}, not {folder!r}: a moved record")
    if record is None or problem is not None:
        kind, message = (problem.kind, problem.message) if problem else ("unparsable", "not a record")
        replaced = f" ({obj.older_versions} older version(s) kept under it)" if obj.older_versions else ""
        return {"problem": {"kind": kind, "message": f"{url}: {message}{replaced}"}}
    evidence = url + (f"?versionId={obj.version_id}" if obj.version_id != "null" else "")
    try:
        row = row_of(record.statement, evidence)
    except EvidenceError as exc:
        return {"problem": {"kind": "edit", "message": f"{url}: {exc.message}"}}
    return {"sha256": record.sha256, "link": _link_of(record.statement), "row": asdict(row)}


def _usable(entry: Any) -> TypeGuard[dict[str, Any]]:
    """A cached verdict this version can read back (an older tool's cache is judged again, never reported)."""
    if not isinstance(entry, dict):
        return False
    if isinstance(entry.get("problem"), dict):
        return True
    try:
        Row(**entry["row"])
    except (KeyError, TypeError):
        return False
    return isinstance(entry.get("sha256"), str) and isinstance(entry.get("link"), dict)


def read_s3_history(
    store: S3Store, verifiers: Sequence[Any], keys_sha256: str, home: Path | None, runbook: str | None = None
) -> tuple[list[Row], list[str], S3Read]:
    """``read_history`` over the S3 evidence store (:class:`drills.evidence.s3.S3Store`).

    Every current version under the prefix is downloaded and verified exactly as a local record
    (signature with the trusted keys, named after its run, in its runbook's folder), then each
    runbook's chain is checked (:func:`drills.evidence.chain.check_chain`: a removed record is a gap).
    S3 holds no chain head, so a missing head is no problem here; a key hidden by a delete marker is.
    The cache (``$RESTORE_DRILLS_HOME/cache/history-s3-*.json``) keys each verdict by object key,
    version id and ETag: a version's bytes never change, so a second run lists once and downloads nothing.
    """
    from drills.evidence.chain import Record, check_chain

    where = f"s3://{store.bucket}/{store.prefix}"
    tag = hashlib.sha256(where.encode()).hexdigest()[:16]
    cache_file = home / "cache" / f"history-s3-{tag}.json" if home is not None else None
    cached = _load_cache(cache_file, keys_sha256) if cache_file else {}
    listing = store.listing(runbook)
    stats = S3Read(listed=len(listing.objects), deleted=len(listing.deleted))
    fresh: dict[str, dict[str, Any]] = {}
    for obj in listing.objects:
        hit = cached.get(obj.cache_key)
        if _usable(hit):
            fresh[obj.cache_key] = hit
        else:
            fresh[obj.cache_key] = _s3_entry(store, obj, verifiers)
            stats.checked += 1
    listed = store.prefix + (f"{runbook}/" if runbook else "")
    others = {k: v for k, v in cached.items() if not k.startswith(listed)}  # other runbooks' entries stay
    if cache_file is not None and fresh | others != cached:
        _save_cache(cache_file, keys_sha256, fresh | others)
    rows: list[Row] = []
    records: dict[str, list[Record]] = {}
    problems: list[str] = []
    for key, entry in fresh.items():
        if "problem" in entry:
            problem = entry["problem"]
            problems.append(f"NOT VERIFIED (not shown): {str(problem.get('kind')).upper()}: {problem.get('message')}")
            continue
        row = Row(**entry["row"])
        record = Record(key.split("\n")[0].rpartition("/")[2], entry["sha256"], entry["link"])
        rows.append(row)
        records.setdefault(row.runbook, []).append(record)
    for key, kept in listing.deleted:
        problems.append(
            f"CHAIN BROKEN: DELETED: s3://{store.bucket}/{key} is hidden by a delete marker"
            + (f"; {kept} locked version(s) remain under it" if kept else "")
        )
    for name in sorted(records):
        found, _notes = check_chain(records[name], None)
        problems += [
            f"CHAIN BROKEN: {p.kind.upper()}: runbook {name}: {p.message}" for p in found if p.kind != "head_missing"
        ]
    rows.sort(key=lambda r: (r.finished_at, r.run_id))
    return rows, problems, stats


def select(rows: Iterable[Row], runbook: str | None, since: datetime | None) -> list[Row]:
    out = []
    for r in rows:
        if runbook is not None and r.runbook != runbook:
            continue
        if since is not None:
            try:
                at = datetime.fromisoformat(r.finished_at.replace("Z", "+00:00"))
            except ValueError:
                continue
            if at < since:
                continue
        out.append(r)
    return out


def render_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(["" if v is None else v for v in asdict(r).values()])
    return buf.getvalue()


def _s(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}s"


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"


def render_table(rows: Sequence[Row]) -> str:
    head = ["finished (UTC)", "runbook", "verdict", "RTO", "restore", "await", "connect", "validate", "RPO",
            "restored", "objective", "regression"]  # fmt: skip
    body = [
        [r.finished_at[:19].replace("T", " "), r.runbook, r.verdict, _s(r.rto_ms), _s(r.restore_ms),
         _s(r.await_ready_ms), _s(r.connect_ms), _s(r.validate_ms), _s(r.rpo_ms), _size(r.restored_bytes),
         _s(r.rto_objective_ms), {True: "FLAG", False: "ok", None: "-"}[r.regression]]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body]) + "\n"  # fmt: skip


def outlook(rows: Sequence[Row]) -> list[str]:
    """Per runbook, the trend and projection recomputed over the verified rows shown (pure)."""
    from drills.trend import Point, project, trend

    lines = []
    for name in sorted({r.runbook for r in rows}):
        mine = [r for r in rows if r.runbook == name]
        points = []
        for r in mine:
            try:
                at = datetime.fromisoformat(r.finished_at.replace("Z", "+00:00"))
            except ValueError:
                continue
            if isinstance(r.rto_ms, int):
                points.append(Point(at, r.rto_ms, r.restored_bytes, r.verdict == "passed"))
        t = trend(points)
        if t["direction"] is None:
            said = str(t["reason"])
        else:
            said = (f"trend {t['direction']} ({t['slope_ms_per_day'] / 1000:+.2f}s/day, "
                    f"Mann-Kendall p={t['p_value']}, {t['drills']} drills)")  # fmt: skip
        objective = mine[-1].rto_objective_ms
        if objective:
            p = project(points, objective)
            said += "; " + str(p.get("summary") or f"no projection: {p['reason']}")
        lines.append(f"{name}: {said}")
    return lines
