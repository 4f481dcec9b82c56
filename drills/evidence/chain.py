"""The evidence trail: one linear chain of signed records per runbook, and what breaks it.

Each record names its predecessor (``chain.seq``, ``chain.prev_envelope_sha256``),
so an edited, removed or reordered record breaks a link. Three things a link
alone cannot give are handled here:

* **No fork.** Appending (reading the tip, signing the next record, writing it
  and the head) happens under an exclusive ``flock`` on ``.chain.lock`` in the
  evidence directory, so concurrent drills of one runbook are serialized into
  ``seq`` 1..N. (``flock`` is local: an evidence directory shared over NFS
  between hosts needs a store with conditional writes instead.)
* **Only trusted records count.** A record is part of a chain only if it
  verifies against the trusted keys and is named after its ``drill.id``.
  Anything else in the directory (a planted record signed by another key, an
  edited or unparsable file) is a :class:`Problem`, never a link.
* **No silent truncation.** After each append a signed *chain head*
  (``<runbook>.chain-head.json``: an in-toto Statement naming the newest
  record by digest and seq) is written beside the records. Deleting the newest
  records leaves a head naming a record that is not there; deleting the head
  too leaves records without a head. An auditor can also pin the head: every
  record carries the digest of the head it was appended after
  (``chain.prev_head_sha256``), so a pinned head digest stays checkable after
  later drills replaced the head file.

The checks are pure functions over :class:`Record` lists, so the same rules
serve the drill writing its record (the problems go into the record as
``evidence_trail.deviations``) and ``drill verify --chain`` (exit 1 on any).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drills.clock import SystemClock
from drills.errors import DrillError, EvidenceError, VerificationError
from drills.evidence.canonical import canonical_json
from drills.evidence.dsse import open_envelope, sign_envelope
from drills.evidence.keys import SigningKey, VerifyingKey
from drills.evidence.statement import PAYLOAD_TYPE, STATEMENT_TYPE
from drills.evidence.store import EVIDENCE_SUFFIX, atomic_write, envelope_bytes, verify_evidence_bytes
from drills.wait import every, until

__all__ = [
    "HEAD_PREDICATE_TYPE",
    "HEAD_SUFFIX",
    "LOCK_FILE",
    "ChainReport",
    "Head",
    "Problem",
    "Record",
    "Scan",
    "chain_lock",
    "check_chain",
    "classify",
    "head_path",
    "next_link",
    "read_head",
    "scan",
    "verify_directory",
    "write_head",
]

LOCK_FILE = ".chain.lock"
HEAD_SUFFIX = ".chain-head.json"
HEAD_PREDICATE_TYPE = "https://restore-drills.dev/chain-head/v1"
LOCK_TIMEOUT_SECONDS = 300.0  # a drill's evidence waits this long for the drills ahead of it
MAX_FILE_BYTES = 64 * 1024 * 1024  # far above any record; a planted huge file is a problem, not a read


def _read_regular(path: Path) -> bytes:
    """A file's bytes, refusing what a hostile directory could hold instead: a symlink, a FIFO (a read
    that never returns, while the append lock is held), a device, a huge file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than any record")
        return os.pread(fd, st.st_size, 0)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Problem:
    """One way the trail does not hold. ``kind`` is one of: ``unparsable``, ``untrusted`` (signed by a
    key not trusted), ``edit`` (names a trusted key but does not verify; or a link to a replaced
    record), ``no_keyid``, ``renamed``, ``gap``, ``fork``, ``reorder``, ``truncated``,
    ``head_missing``, ``head_invalid``, ``pin_not_found``."""

    kind: str
    message: str
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "message": self.message}


@dataclass(frozen=True)
class Record:
    """A record that verified against the trusted keys and is named after its run."""

    file: str
    sha256: str  # of the file's bytes: what the next record links to
    statement: dict[str, Any] = field(repr=False)

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.statement["predicate"]
        return predicate

    def _get(self, *keys: str) -> Any:
        obj: Any = self.predicate
        for key in keys:
            obj = obj.get(key) if isinstance(obj, dict) else None
        return obj

    @property
    def run_id(self) -> str:
        return str(self._get("drill", "id"))

    @property
    def runbook(self) -> str | None:
        name = self._get("runbook", "name")
        return name if isinstance(name, str) else None

    @property
    def seq(self) -> int | None:
        seq = self._get("chain", "seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def prev(self) -> str | None:
        prev = self._get("chain", "prev_envelope_sha256")
        return prev if isinstance(prev, str) else None

    @property
    def prev_head(self) -> str | None:
        prev = self._get("chain", "prev_head_sha256")
        return prev if isinstance(prev, str) else None

    @property
    def finished_at(self) -> str:
        return str(self._get("drill", "finished_at") or self._get("drill", "started_at") or "")


@dataclass(frozen=True)
class Head:
    """A verified chain head: the newest record of a runbook's chain when the head was written."""

    file: str
    sha256: str  # of the head file: what an auditor pins
    runbook: str
    seq: int
    envelope_sha256: str
    run_id: str


@dataclass
class Scan:
    """Everything in an evidence directory: the trusted records, and the files that are not."""

    records: list[Record] = field(default_factory=list)
    rejected: list[tuple[Problem, str | None]] = field(default_factory=list)  # (problem, runbook it claims)

    def of(self, runbook: str) -> list[Record]:
        """The trusted records of one runbook, in chain order."""
        mine = [r for r in self.records if r.runbook == runbook]
        return sorted(mine, key=lambda r: (r.seq or 0, r.finished_at, r.run_id))

    def rejected_for(self, runbook: str) -> list[Problem]:
        """Files that claim this runbook (or whose runbook cannot be read) but are not trusted records."""
        return [p for p, claimed in self.rejected if claimed in (runbook, None)]


# --------------------------------------------------------------------------- reading


def _claimed_runbook(envelope: object) -> str | None:
    """The runbook an *unverified* envelope claims, only to say which chain a rejected file pretends to be in."""
    try:
        assert isinstance(envelope, dict)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        name = statement["predicate"]["runbook"]["name"]
    except Exception:  # anything unreadable simply claims nothing
        return None
    return name if isinstance(name, str) else None


def classify(name: str, data: bytes, verifiers: Sequence[VerifyingKey]) -> tuple[Record | None, Problem | None]:
    """One file's bytes judged (a directory's or an S3 object's): a trusted record, or what keeps it out."""
    try:
        envelope = json.loads(data.decode("utf-8"))
        signatures = envelope["signatures"]
        assert isinstance(signatures, list)
    except Exception:  # not JSON, not an envelope: one kind of problem
        return None, Problem("unparsable", f"{name} is not a DSSE envelope (unparsable)", name)
    if any(isinstance(s, dict) and not s.get("keyid") for s in signatures):
        return None, Problem("no_keyid", f"{name}: a signature has no keyid (this tool always writes one)", name)
    try:
        statement = verify_evidence_bytes(data, verifiers, source=name)
    except (VerificationError, EvidenceError) as exc:
        trusted = {v.keyid for v in verifiers}
        named = {s.get("keyid") for s in signatures if isinstance(s, dict)}
        if named & trusted:
            return None, Problem("edit", f"{name} names a trusted key but does not verify: {exc.message}", name)
        return None, Problem(
            "untrusted",
            f"{name} is signed by {', '.join(map(str, sorted(str(k) for k in named)))}, not a trusted key",
            name,
        )
    record = Record(name, hashlib.sha256(data).hexdigest(), statement)
    if name != f"{record.run_id}{EVIDENCE_SUFFIX}":
        return None, Problem("renamed", f"{name} records drill.id {record.run_id!r}: a renamed file", name)
    return record, None


def scan(directory: Path, verifiers: Sequence[VerifyingKey], *, runbook: str | None = None) -> Scan:
    """Verify every ``*.evidence.json`` in ``directory``; never raises for a bad file (it is a problem).

    With ``runbook``, files that claim another runbook are skipped unverified: a trusted record's runbook
    is the one its payload claims, so they could be neither this runbook's records nor files that
    pretend to be (:meth:`Scan.of` and :meth:`Scan.rejected_for` come out the same). A drill appending
    to one chain in a directory shared by a fleet then verifies its own chain, not every runbook's.
    """
    result = Scan()
    if not Path(directory).is_dir():
        return result
    for path in sorted(Path(directory).glob(f"*{EVIDENCE_SUFFIX}")):
        try:
            data = _read_regular(path)
        except OSError as exc:
            unreadable = Problem("unparsable", f"{path.name}: unreadable: {exc.strerror or exc}", path.name)
            result.rejected.append((unreadable, None))
            continue
        try:
            claimed = _claimed_runbook(json.loads(data))
        except ValueError:
            claimed = None
        if runbook is not None and claimed is not None and claimed != runbook:
            continue
        record, problem = classify(path.name, data, verifiers)
        if record is not None:
            result.records.append(record)
        elif problem is not None:
            result.rejected.append((problem, claimed))
    return result


def head_path(directory: Path, runbook: str) -> Path:
    return Path(directory) / f"{runbook}{HEAD_SUFFIX}"


def read_head(directory: Path, runbook: str, verifiers: Sequence[VerifyingKey]) -> Head | Problem | None:
    """The runbook's verified chain head; None when there is none; a Problem when it does not verify."""
    path = head_path(directory, runbook)
    try:
        data = _read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem("head_invalid", f"{path.name}: unreadable: {exc.strerror or exc}", path.name)
    try:
        envelope = json.loads(data.decode("utf-8"))
        opened = open_envelope(envelope, verifiers, strict=True)
        statement = json.loads(opened.payload)
        if envelope_bytes(envelope) != data or canonical_json(statement) != opened.payload:
            raise VerificationError("not byte-for-byte as written")
        if opened.payload_type != PAYLOAD_TYPE or statement.get("_type") != STATEMENT_TYPE:
            raise VerificationError("not an in-toto statement")
        if statement.get("predicateType") != HEAD_PREDICATE_TYPE:
            raise VerificationError(f"predicateType is not {HEAD_PREDICATE_TYPE}")
        predicate, subject = statement["predicate"], statement["subject"][0]
        head = Head(
            file=path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            runbook=str(predicate["runbook"]),
            seq=int(predicate["chain"]["seq"]),
            envelope_sha256=str(subject["digest"]["sha256"]),
            run_id=str(predicate["run_id"]),
        )
    except (DrillError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return Problem("head_invalid", f"{path.name} does not verify as a chain head: {exc}", path.name)
    if head.runbook != runbook:
        return Problem("head_invalid", f"{path.name} is the head of runbook {head.runbook!r}", path.name)
    return head


# --------------------------------------------------------------------------- checking


def check_chain(records: Sequence[Record], head: Head | Problem | None) -> tuple[list[Problem], list[str]]:
    """Problems of one runbook's chain of trusted records (and its head), and notes that are no problem."""
    problems: list[Problem] = []
    times: list[str] = []  # dates out of seq order: worth a look, but the links are what the signatures prove
    by_seq: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        if r.seq is None or r.seq < 1:
            problems.append(Problem("edit", f"{r.file} carries no chain.seq", r.file))
        else:
            by_seq[r.seq].append(r)
    top = max(by_seq, default=0)
    missing = [k for k in range(1, top + 1) if k not in by_seq]
    if missing:
        problems.append(Problem("gap", f"seq {_ranges(missing)} missing of 1..{top}: records were removed"))
    by_sha = {r.sha256: r for r in records}
    for seq in sorted(by_seq):
        held = by_seq[seq]
        if len(held) > 1:
            problems.append(Problem("fork", f"seq {seq} is held by {len(held)} records: {_files(held)}"))
        for r in held:
            before = by_seq.get(seq - 1, [])
            problems += _link_problems(r, before, by_sha)
            if len(before) == 1 and r.finished_at and before[0].finished_at and r.finished_at < before[0].finished_at:
                times.append(f"{r.file} (seq {seq}) is dated before {before[0].file}: did the clock step back?")
    head_problems, notes = _head_problems(head, by_sha, top, bool(records))
    return problems + head_problems, times + notes


def _link_problems(r: Record, before: list[Record], by_sha: dict[str, Record]) -> list[Problem]:
    """Whether ``r`` links to the one record before it (linking to another record of the chain is a reorder)."""
    seq = r.seq or 0
    if seq == 1 and r.prev is not None and r.prev not in by_sha:
        return [Problem("gap", f"{r.file} (seq 1) links to a record that is not here", r.file)]
    if len(before) != 1:
        return []  # a gap or a fork before it, reported once for the chain
    p = before[0]
    if r.prev != p.sha256:
        target = by_sha.get(r.prev or "")
        if target is not None:
            return [Problem("reorder", f"{r.file} (seq {seq}) links to {target.file} (seq {target.seq})", r.file)]
        return [
            Problem(
                "edit",
                f"{r.file} (seq {seq}) links to {str(r.prev)[:16]}…, not to {p.file} (seq {seq - 1}): "
                "the record before it was replaced",
                r.file,
            )
        ]
    return []


def _head_problems(
    head: Head | Problem | None, by_sha: dict[str, Record], top: int, any_records: bool
) -> tuple[list[Problem], list[str]]:
    """The head must name a record that is here, at the seq it says."""
    if isinstance(head, Problem):
        return [head], []
    if head is None:
        missing = Problem("head_missing", "no chain head beside the records: the head was removed")
        return ([missing] if any_records else []), []
    named = by_sha.get(head.envelope_sha256)
    if named is None:
        return [
            Problem(
                "truncated",
                f"the chain head names seq {head.seq} ({head.run_id}{EVIDENCE_SUFFIX}), which is not here: "
                "the newest records were removed",
                head.file,
            )
        ], []
    if named.seq != head.seq:
        wrong = Problem("head_invalid", f"the head says seq {head.seq}; {named.file} is seq {named.seq}", head.file)
        return [wrong], []
    if top > head.seq:
        return [], [f"the head names seq {head.seq}; seq {head.seq + 1}..{top} were written after it"]
    return [], []


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def _files(records: Sequence[Record]) -> str:
    return ", ".join(r.file for r in records)


def next_link(records: Sequence[Record], head: Head | Problem | None, runbook: str) -> dict[str, Any]:
    """``previous_drill`` and ``chain`` of the next record: after the newest trusted record, or after
    the head when the records it names were removed (so the gap stays visible in the chain)."""
    tip = max(records, key=lambda r: (r.seq or 0, r.finished_at, r.run_id), default=None)
    prev: dict[str, Any] | None = None
    seq = 0
    if tip is not None:
        seq = tip.seq or 0
        prev = {"id": tip.run_id, "at": tip.finished_at, "envelope_sha256": tip.sha256}
    if isinstance(head, Head) and head.seq > seq:
        seq = head.seq
        prev = {"id": head.run_id, "at": None, "envelope_sha256": head.envelope_sha256}
    return {
        "previous_drill": prev,
        "chain": {
            "id": f"runbook:{runbook}",
            "seq": seq + 1,
            "prev_envelope_sha256": prev["envelope_sha256"] if prev else None,
            "prev_head_sha256": head.sha256 if isinstance(head, Head) else None,
        },
    }


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def chain_lock(directory: Path, timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the evidence directory's append lock (``flock`` on ``.chain.lock``) for one append."""
    directory = Path(directory)
    path = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EvidenceError(f"cannot open the chain lock {path}: {exc.strerror or exc}") from exc
    try:

        def locked() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise EvidenceError(f"cannot lock {path}: {exc.strerror or exc}") from exc
                return False
            return True

        if not until(SystemClock(), timeout_seconds, locked, f"{path} locked", policy=every(0.02)):
            raise EvidenceError(
                f"{path} stayed locked for {timeout_seconds:.0f}s by another drill writing evidence",
                hint="is a drill hung while writing its evidence? the lock goes when its process ends",
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def write_head(directory: Path, runbook: str, record: Path, seq: int, signer: SigningKey, *, at: str) -> Path:
    """Sign and atomically replace the runbook's chain head, naming ``record`` (just written) as seq."""
    data = Path(record).read_bytes()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": Path(record).name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}],
        "predicateType": HEAD_PREDICATE_TYPE,
        "predicate": {
            "chain": {"id": f"runbook:{runbook}", "seq": seq},
            "runbook": runbook,
            "run_id": Path(record).name.removesuffix(EVIDENCE_SUFFIX),
            "written_at": at,
        },
    }
    path = head_path(directory, runbook)
    atomic_write(path, envelope_bytes(sign_envelope(canonical_json(statement), PAYLOAD_TYPE, signer)))
    return path


# --------------------------------------------------------------------------- auditing a directory


@dataclass
class ChainReport:
    """``drill verify --chain``: per runbook, its records, head and problems; plus unmatched pins."""

    runbooks: dict[str, tuple[list[Record], Head | Problem | None, list[Problem], list[str]]]
    pins_not_found: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.pins_not_found and all(not problems for _, _, problems, _ in self.runbooks.values())


def verify_directory(directory: Path, verifiers: Sequence[VerifyingKey], pins: Sequence[str] = ()) -> ChainReport:
    """Check every runbook's chain in an evidence directory (see :func:`check_chain`).

    A pinned digest holds when it is the current head file of a chain, a head some record was
    appended after (``chain.prev_head_sha256``), or a record of a chain.
    """
    found = scan(directory, verifiers)
    names = {r.runbook for r in found.records if r.runbook}
    names |= {claimed for _, claimed in found.rejected if claimed}
    names |= {p.name.removesuffix(HEAD_SUFFIX) for p in Path(directory).glob(f"*{HEAD_SUFFIX}")}
    report = ChainReport(runbooks={}, pins_not_found=[])
    known: set[str] = set()
    for name in sorted(names):
        records = found.of(name)
        head = read_head(directory, name, verifiers)
        problems, notes = check_chain(records, head)
        problems = [p for p, claimed in found.rejected if claimed == name] + problems
        report.runbooks[name] = (records, head, problems, notes)
        known |= {r.sha256 for r in records} | {r.prev_head for r in records if r.prev_head}
        if isinstance(head, Head):
            known.add(head.sha256)
    orphans = [p for p, claimed in found.rejected if claimed is None]
    if orphans:
        report.runbooks["(no runbook)"] = ([], None, orphans, [])
    for pin in pins:
        if pin.lower().removeprefix("sha256:") not in known:
            report.pins_not_found.append(
                Problem(
                    "pin_not_found",
                    f"pinned digest {pin} is no chain head or record here: records after it were removed, "
                    "or it pins another directory",
                )
            )
    return report
