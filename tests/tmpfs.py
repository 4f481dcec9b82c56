"""A real full disk for the journal: a small tmpfs, filled so that the very next append fails.

Mounting needs root (CAP_SYS_ADMIN); tests that use it skip elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill_after", "small_tmpfs"]

PAGE = 4096  # tmpfs hands out whole pages: a file's last page has room until it is full


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    where.mkdir(mode=0o700)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_after(journal: Path, filler: Path) -> None:
    """Make the filesystem of ``journal`` full, with its last page full too: its next append gets ENOSPC.

    The journal is first padded with one valid JSON line up to a page
    boundary (while there is still room), then every free page is taken.
    """
    slack = -journal.stat().st_size % PAGE
    if slack < 64:
        slack += PAGE
    line = {"at": "", "event": "test_padding", "pad": ""}
    line["pad"] = "x" * (slack - len(json.dumps(line, sort_keys=True)) - 1)
    with journal.open("a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    assert journal.stat().st_size % PAGE == 0
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = b"\0" * PAGE
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
