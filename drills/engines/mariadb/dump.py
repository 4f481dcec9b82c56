"""Loading a ``mariadb-dump`` SQL file (plain or gzip'd) into the restored server, and proving it loaded whole.

A dump that ends early (no ``-- Dump completed`` trailer in a commented dump, a gzip stream cut
short) or holds SQL the client refuses is the backup's defect; a client that failed for the
environment (see :mod:`drills.engines.mariadb.client`) is not.
"""

from __future__ import annotations

import contextlib
import gzip
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from drills.engines.mariadb.backup import DUMP_TRAILER, DumpInfo
from drills.engines.mariadb.client import Piped, client_error, environment_failed
from drills.engines.mariadb.declaration import MariadbDumpSource
from drills.errors import BackupDefect, DeadlineExceeded, DrillError, RestoreFailed
from drills.osutil import open_private_log

__all__ = ["Streamed", "feed_dump", "judge_dump"]


@dataclass
class Streamed:
    """What streaming a dump saw."""

    lines: int = 0
    last: bytes = b""
    used: str | None = None


def dump_lines(path: Path, gz: bool) -> Iterator[bytes]:
    """The dump's lines, gunzipped when it is gzip'd."""
    opener: Any = gzip.open if gz else open
    with opener(path, "rb") as fh:
        yield from fh


def stream_dump(path: Path, gz: bool, sink: IO[bytes], out: Streamed) -> None:
    """Write the dump to the client in 1 MiB batches, noting lines, the last line and the first USE."""
    batch: list[bytes] = []
    size = 0
    for line in dump_lines(path, gz):
        out.lines += 1
        if line.strip():
            out.last = line.strip()
        if out.used is None and line.startswith(b"USE `"):
            out.used = line[5:].split(b"`", 1)[0].decode("utf-8", errors="replace")
        batch.append(line)
        size += len(line)
        if size >= 1 << 20:
            sink.write(b"".join(batch))
            batch, size = [], 0
    if batch:
        sink.write(b"".join(batch))


def feed_dump(client_cmd: list[str], dump: Path, gz: bool, errpath: Path, timeout: float) -> tuple[Streamed, Piped]:
    """Stream the dump into the client, killing it at ``timeout``; what was streamed and how it ended.

    ``Piped.reader_err`` carries a read error of the dump itself (a gzip stream cut short).
    """
    expired = threading.Event()
    streamed = Streamed()
    problem = None
    with open_private_log(errpath) as err:
        client = subprocess.Popen(
            client_cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd="/",
            start_new_session=True,
        )
        assert client.stdin is not None

        def kill() -> None:
            expired.set()
            client.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            stream_dump(dump, gz, client.stdin, streamed)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            if not isinstance(exc, BrokenPipeError):
                problem = f"cannot read {dump} after line {streamed.lines}: {exc}"
            with contextlib.suppress(OSError):
                client.kill()
        except BaseException:  # a signal: the client must not go on loading what it already holds
            with contextlib.suppress(OSError):
                client.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                client.stdin.close()
            rc = client.wait()
            timer.cancel()
    piped = Piped(0, problem or "", rc, errpath.read_text(errors="replace"), expired.is_set(), False)
    return streamed, piped


def judge_dump(
    src: MariadbDumpSource, info: DumpInfo | None, streamed: Streamed, piped: Piped, timeout: float
) -> tuple[dict[str, Any], DrillError | None]:
    """Complete when the client took every line without an error, through the trailer of a commented dump.

    Returns the recovery proof and, when the load fell short, the error that fails the drill.

    ``piped.reader_err`` carries a read error of the dump itself (a gzip stream cut short).
    """
    code, line, text = client_error(piped.client_err)
    problem, rc = piped.reader_err, piped.client_rc
    trailer = bool(info and info.commented)
    complete = rc == 0 and not problem and (not trailer or streamed.last.startswith(DUMP_TRAILER))
    detail = "the client loaded every line" + (" through the '-- Dump completed' trailer" if trailer else "")
    if problem:
        detail = problem
    elif piped.timed_out:
        detail = f"the mariadb client was killed after {timeout:.0f}s"
    elif rc != 0:
        detail = f"the mariadb client failed{f' at dump line {line}' if line else ''}: {text or f'exit {rc}'}"
    elif not complete:
        detail = f"the dump has no '-- Dump completed' trailer (last line: {streamed.last[:120]!r})"
    proof = {
        "requested": {"dump": str(src.dump), "until": "the '-- Dump completed' trailer" if trailer else "its end"},
        "reached": {"lines_streamed": streamed.lines, "last_line": streamed.last[:120].decode("utf-8", "replace")},
        "complete": complete,
        "detail": detail,
    }
    if complete:
        return proof, None
    message = f"loading the dump {src.dump} failed: {detail}"
    if piped.timed_out:
        return proof, DeadlineExceeded(message)
    if rc != 0 and not problem and environment_failed(code, text):
        return proof, RestoreFailed(message)
    return proof, BackupDefect(message, hint="the dump itself is damaged or was cut short")
