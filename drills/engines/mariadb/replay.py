"""The binlog replay: ``mariadb-binlog | mariadb`` with the stream followed on its way, and the proof of
where it got to against the plan (:mod:`drills.engines.mariadb.plan`)."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.clock import iso_epoch
from drills.engines.mariadb.backup import as_user, utc_env
from drills.engines.mariadb.client import Piped, client_error, environment_failed, last_lines
from drills.engines.mariadb.plan import Position, ReplayPlan
from drills.errors import DeadlineExceeded, DrillError, IncompleteRecovery, RestoreFailed
from drills.osutil import RunAs, open_private_log

__all__ = ["ReplayTracker", "judge_replay", "pipe"]


# ---------------------------------------------------------------- where replay got to

# the line mariadb-binlog prints before each event: "#%02d%02d%02d %2d:%02d:%02d server id %lu  end_log_pos %s ..."
_HEADER_LINE = re.compile(rb"\n#(\d\d)(\d\d)(\d\d) ([ \d]\d):(\d\d):(\d\d) server id \d+  end_log_pos (\d+) ")
_HEADER_COUNT = re.compile(rb"\n#\d{6} [ \d]\d:\d\d:\d\d server id \d+  end_log_pos \d+ ()")  # findall: one b"" each
_FDE_TEXT = b"Start: binlog v"  # the format description's header line: a new file begins
_AT_LINE = re.compile(rb"\n# at (\d+)(?=\n|\Z)")
_COMMIT_TEXTS = (b" \tXid = ", b" \tQuery\t")  # the header lines of the events that end a transaction


def _last_header(buf: bytes, start: int, end: int, text: bytes) -> re.Match[bytes] | None:
    """The last header line in ``buf[start:end]`` holding ``text``."""
    i = end
    while (i := buf.rfind(text, start, i)) >= 0:
        ls = buf.rfind(b"\n", start, i)
        m = _HEADER_LINE.match(buf, ls) if ls >= 0 else None
        if m and buf.find(b"\n", ls + 1, i) < 0:  # on that header line itself
            return m
    return None


_AT_FOUR = re.compile(rb"\n# at 4(?=\n|\Z)")


def _fde_starts(block: bytes, lo: int = 0, hi: int | None = None) -> list[int]:
    """Offsets (of the newline before) each format description header line in ``block[lo:hi]``."""
    hi = len(block) if hi is None else hi
    out: list[int] = []
    i = block.find(_FDE_TEXT, lo, hi)
    while i >= 0:
        ls = block.rfind(b"\n", lo, i)
        if ls >= 0 and _HEADER_LINE.match(block, ls):
            out.append(ls)
        i = block.find(_FDE_TEXT, i + 1, hi)
    return out


@dataclass
class _FileSeen:
    last_end: int = 0
    headers: int = 0
    stamp: tuple[bytes, ...] = ()
    commit_stamp: tuple[bytes, ...] = ()


def _stamp_ts(stamp: tuple[bytes, ...]) -> int | None:
    if not stamp:
        return None
    y, mo, d, h, mi, s = (int(x) for x in stamp)
    return int(datetime(2000 + y, mo, d, h, mi, s, tzinfo=UTC).timestamp())


class ReplayTracker:
    """Follows mariadb-binlog's output, fed in chunks as it streams to the client, file by file.

    A file starts at the header line of its format description (``Start: binlog v 4``); each
    header line says where its event ends (``end_log_pos``). The work per chunk is a few C-level
    scans over the chunk in place (count, find, findall), never a Python step per event nor a
    copy of the chunk, so following a replay costs little next to the replay. The last few MiB
    of output are kept so that, when the client fails at line L, the event it failed on can be
    named. Text an event carries (a statement logged in STATEMENT format) could imitate a header
    line; that only adds lines, and replay counts as complete only when the lines match the scan
    exactly, so it can fail a drill, never pass one.
    """

    def __init__(self, files: Sequence[str], start_position: int, keep_bytes: int = 8 << 20) -> None:
        self.names = list(files)
        self.start_position = start_position
        self.seen: list[_FileSeen] = []
        self.lines = 0  # newlines consumed so far
        self._carry = b"\n"  # the unfinished last line, with the newline before it (header patterns start there)
        # (newlines before, "# at 4" lines before, buffer, start, end) of the last few MiB of output
        self._recent: collections.deque[tuple[int, int, bytes, int, int]] = collections.deque()
        self._recent_bytes = 0
        self._keep = keep_bytes
        self._files_opened = 0

    def feed(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._carry += chunk
            return
        last = chunk.rfind(b"\n")
        joined = self._carry + chunk[:first]  # the line that straddles the chunks: small
        self._block(joined, 0, len(joined))
        if last > first:
            self._block(chunk, first, last)
        self._carry = chunk[last:]

    def finish(self) -> None:
        """Account for an unfinished last line (mariadb-binlog ends its output with a newline)."""
        if len(self._carry) > 1:
            self.feed(b"\n")

    def _block(self, buf: bytes, lo: int, hi: int) -> None:
        """Whole lines ``buf[lo:hi]``, starting with the newline before the first one."""
        self._recent.append((self.lines, self._files_opened, buf, lo, hi))
        self._recent_bytes += hi - lo
        while self._recent_bytes > self._keep and len(self._recent) > 1:
            _, _, _, a, b = self._recent.popleft()
            self._recent_bytes -= b - a
        self._files_opened += len(_AT_FOUR.findall(buf, lo, hi))
        bounds = [lo, *_fde_starts(buf, lo, hi), hi]
        for j in range(len(bounds) - 1):
            if j > 0:
                self.seen.append(_FileSeen())
            self._count(buf, bounds[j], bounds[j + 1])
        self.lines += buf.count(b"\n", lo, hi)

    def _count(self, buf: bytes, start: int, end: int) -> None:
        n = len(_HEADER_COUNT.findall(buf, start, end))
        if n == 0:
            return
        if not self.seen:
            self.seen.append(_FileSeen())
        cur = self.seen[-1]
        cur.headers += n
        m = _last_header(buf, start, end, b"  end_log_pos ")
        if m:
            cur.last_end, cur.stamp = int(m.group(7)), m.group(1, 2, 3, 4, 5, 6)
        commits = [c for text in _COMMIT_TEXTS if (c := _last_header(buf, start, end, text))]
        if commits:
            cur.commit_stamp = max(commits, key=lambda c: c.start()).group(1, 2, 3, 4, 5, 6)

    def _pos(self, k: int) -> int:
        seen = self.seen[k]
        return max(seen.last_end, self.start_position) if k == 0 else seen.last_end

    def reached(self) -> Position | None:
        """The end of the last event emitted (in the first file, never before the backup's position)."""
        if not self.seen:
            return None
        k = min(len(self.seen), len(self.names)) - 1
        return Position(self.names[k], self._pos(k), _stamp_ts(self.seen[k].stamp))

    def last_commit(self) -> int | None:
        """Timestamp of the last transaction-ending event emitted (an Xid, or a Query: COMMIT or DDL)."""
        return next((t for f in reversed(self.seen) if (t := _stamp_ts(f.commit_stamp)) is not None), None)

    def event_at_line(self, line: int) -> Position | None:
        """Where the event printed on output line ``line`` (1-based) starts: the last ``# at N`` up to that line.

        Files are told apart by their ``# at 4`` line (the format description opens every file).
        """
        for before, opened, buf, lo, hi in reversed(self._recent):
            if before + 1 > line:
                continue
            best, newlines, prev = None, before, lo
            for m in _AT_LINE.finditer(buf, lo, hi):
                newlines += buf.count(b"\n", prev, m.start() + 1)
                prev = m.start() + 1
                if newlines > line:  # counting the newline before the first line, line n follows the n-th newline
                    break
                best = m
            if best is None:
                continue
            file_k = opened + len(_AT_FOUR.findall(buf, lo, best.end())) - 1
            if 0 <= file_k < len(self.names):
                return Position(self.names[file_k], int(best.group(1)), None)
            return None
        return None

    def shortfall(self, plan: ReplayPlan) -> tuple[Position, str] | None:
        """None when every file replayed was emitted exactly as the scan expects; else where and how it fell short."""
        for k, (name, end, headers) in enumerate(plan.expect):
            if k >= len(self.seen):
                return self.reached() or Position(name, 4, None), f"{name} was never reached"
            at = Position(name, self._pos(k), None)
            if self._pos(k) != end:
                return at, f"{name} was emitted until position {self._pos(k)}, the replay needs it until {end}"
            if self.seen[k].headers != headers:
                return at, f"{name}: mariadb-binlog emitted {self.seen[k].headers} events, the scan found {headers}"
        if len(self.seen) > len(plan.expect):
            return (
                self.reached() or plan.requested,
                f"mariadb-binlog emitted {len(self.seen)} files, not {len(plan.expect)}",
            )
        return None


# ---------------------------------------------------------------- the pipe and its verdict


def pipe(
    reader_cmd: list[str],
    client_cmd: list[str],
    tracker: ReplayTracker,
    log_dir: Path,
    timeout: float,
    *,
    run_as: RunAs | None,
) -> Piped:
    """Run ``reader | client`` with the stream passing through ``tracker``; kill both at ``timeout``.

    mariadb-binlog runs as the server's user when we are root: it parses files it did not
    write, and preflight checked they are readable by that user.
    """
    reader_log, client_log = log_dir / "replay.err", log_dir / "client.err"
    expired = threading.Event()
    broken = False
    with open_private_log(reader_log) as rerr, open_private_log(client_log) as cerr:
        try:
            reader = subprocess.Popen(
                reader_cmd,
                stdout=subprocess.PIPE,
                stderr=rerr,
                env=utc_env(),
                cwd="/",
                start_new_session=True,
                **as_user(run_as),
            )
        except OSError as exc:
            raise RestoreFailed(f"cannot start mariadb-binlog: {exc}") from None
        try:
            client = subprocess.Popen(
                client_cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=cerr,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            reader.kill()
            reader.wait()
            raise RestoreFailed(f"cannot start the mariadb client: {exc}") from None
        assert reader.stdout is not None and client.stdin is not None

        def kill() -> None:
            expired.set()
            reader.kill()
            client.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            fd = reader.stdout.fileno()
            for pipe in (fd, client.stdin.fileno()):  # fewer, larger reads and writes through this process
                with contextlib.suppress(OSError):
                    fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, 1 << 20)
            while chunk := os.read(fd, 1 << 20):
                tracker.feed(chunk)
                try:
                    client.stdin.write(chunk)
                except BrokenPipeError:
                    broken = True
                    break
            tracker.finish()
        except BaseException:
            # a signal (or a bug) ends the replay now: waiting would block on a reader nobody reads
            kill()
            raise
        finally:
            if broken:
                reader.kill()
            with contextlib.suppress(OSError):
                client.stdin.close()
            client_rc, reader_rc = client.wait(), reader.wait()
            timer.cancel()
            reader.stdout.close()
    return Piped(
        reader_rc=reader_rc,
        reader_err=reader_log.read_text(errors="replace").strip(),
        client_rc=client_rc,
        client_err=client_log.read_text(errors="replace").strip(),
        timed_out=expired.is_set(),
        broken_pipe=broken,
    )


def judge_replay(
    plan: ReplayPlan, tracker: ReplayTracker, piped: Piped, timeout: float
) -> tuple[dict[str, Any], DrillError | None]:
    """Complete only if both processes succeeded and every file was emitted exactly as preflight found it.

    Returns the recovery proof and, when the replay fell short, the error that fails the drill.
    """
    reached = tracker.reached()
    short = tracker.shortfall(plan)
    said = f" (mariadb-binlog said: {last_lines(piped.reader_err)})" if piped.reader_err else ""
    cause: str | None = None
    environment = False
    if piped.timed_out:
        cause = f"the replay did not finish within {timeout:.0f}s"
    elif piped.client_rc != 0 or piped.broken_pipe:
        code, line, text = client_error(piped.client_err)
        failed = tracker.event_at_line(line) if line else None
        reached = failed or reached
        cause = f"the mariadb client failed{f' on the event at {failed}' if failed else ''}: {text}"
        environment = environment_failed(code, text)
        if (
            short is not None and failed is not None and plan.files.index(short[0].file) < plan.files.index(failed.file)
        ):  # an earlier file was cut short first; the client failed on what that left
            reached, cause, environment = (
                short[0],
                f"mariadb-binlog skipped the rest: {short[1]}{said}; then {cause}",
                False,
            )
    elif piped.reader_rc != 0:
        cause = f"mariadb-binlog failed (exit {piped.reader_rc}): {last_lines(piped.reader_err)}"
        if short is not None and reached is not None and short[0].file != reached.file:
            reached, cause = short[0], f"mariadb-binlog skipped the rest: {short[1]}; then {cause}"
    elif short is not None:
        reached, cause = short[0], f"mariadb-binlog exited 0 but stopped early: {short[1]}{said}"
    holds = f"; the binlogs hold events until {plan.holds_until}" if plan.holds_until else ""
    proof = {
        "requested": plan.requested.to_dict(),
        "rule": plan.rule,
        "reached": reached.to_dict() if reached else None,
        "complete": cause is None,
        "events_emitted": sum(s.headers for s in tracker.seen),
        # emitted is applied only when the client took everything: the newest replayed is known then
        "newest_replayed_transaction_at": iso_epoch(tracker.last_commit()) if cause is None else None,
        "newest_emitted_transaction_at": iso_epoch(tracker.last_commit()),
        "expected_last_transaction_at": iso_epoch(plan.last_commit_ts),
        "holds_events_until": plan.holds_until.to_dict() if plan.holds_until else None,
        "detail": cause or f"replay reached {plan.requested}: every binlog emitted to where preflight found it ends",
    }
    if cause is None:
        return proof, None
    message = f"binlog replay ended at {reached or 'its start'}, short of {plan.requested}: {cause}{holds}"
    if piped.timed_out:
        return proof, DeadlineExceeded(message)
    if environment:
        return proof, RestoreFailed(message)
    return proof, IncompleteRecovery(message)
