"""WAL segment verification: page headers of archived segments, checked the way recovery reads them.

Recovery stops, silently for a ``latest`` target, at the first page it cannot trust: a zeroed
page, a page from another position or timeline, a short file. So preflight reads every segment
the target needs and checks each page header (magic for the server's major version,
``xlp_pageaddr`` equal to the page's position, timeline no newer than the file's name says, the
long header's system identifier and segment size equal to the backup's). Record CRCs are not
checked here: that is ``verify: full`` (pg_waldump over the range) and, after recovery, the
proof of where recovery stopped.

The scan reads each file once into a reused buffer and looks at the headers through
``memoryview.cast`` strides, so it costs little more than reading the files
(``benchmarks/bench_wal_verify.py``). Everything but :func:`scan_segment`'s read is pure.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

__all__ = [
    "PAGE_MAGIC",
    "PageHeaders",
    "SegmentDefect",
    "WalFile",
    "WalGeometry",
    "check_headers",
    "check_segment_bytes",
    "geometry_of",
    "scan_segment",
    "segment_name",
    "span_bytes",
    "split_name",
]

# XLOG_PAGE_MAGIC per major version (src/include/access/xlog_internal.h); recovery refuses any other.
PAGE_MAGIC: dict[int, int] = {
    12: 0xD101,
    13: 0xD106,
    14: 0xD10D,
    15: 0xD110,
    16: 0xD113,
    17: 0xD116,
    18: 0xD118,
}

XLP_LONG_HEADER = 0x0002
XLP_ALL_FLAGS = 0x0007
SHORT_HEADER = struct.Struct("<HHIQI")  # magic, info, tli, pageaddr, rem_len (then padding to 24)
LONG_TAIL = struct.Struct("<QII")  # sysid, seg_size, blcksz at offset 24
WAL_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


@dataclass(frozen=True)
class WalGeometry:
    """What every segment of one cluster's WAL shares; from the backup, never assumed."""

    magic: int
    system_identifier: int
    segment_size: int
    page_size: int

    @property
    def segments_per_id(self) -> int:
        return 0x1_0000_0000 // self.segment_size


@dataclass(frozen=True)
class SegmentDefect:
    """One thing wrong with one file, worded for the operator: ``NAME: what``."""

    name: str
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


@dataclass(frozen=True)
class WalFile:
    """An archived segment as listed: name, number, size, and who may read it."""

    name: str
    timeline: int
    number: int  # absolute segment number
    size: int
    mode: int
    uid: int
    gid: int


def split_name(name: str, segments_per_id: int) -> tuple[int, int]:
    """(timeline, absolute segment number) of a WAL file name."""
    m = WAL_NAME.match(name)
    if not m:
        raise ValueError(f"not a WAL segment name: {name}")
    tli, log, seg = (int(g, 16) for g in m.groups())
    return tli, log * segments_per_id + seg


def segment_name(tli: int, number: int, segments_per_id: int) -> str:
    return f"{tli:08X}{number // segments_per_id:08X}{number % segments_per_id:08X}"


def geometry_of(  # noqa: PLR0911 - one return per check reads best: each names its own defect
    first_page: bytes, major: int, system_identifier: int
) -> WalGeometry | SegmentDefect:
    """The geometry a segment's long header declares, checked against the backup's cluster."""
    if len(first_page) < 40:
        return SegmentDefect("", f"{len(first_page)} bytes: too short for a WAL long page header")
    magic, info, _tli, _addr, _rem = SHORT_HEADER.unpack_from(first_page, 0)
    sysid, seg_size, blcksz = LONG_TAIL.unpack_from(first_page, 24)
    expected = PAGE_MAGIC.get(major)
    if expected is not None and magic != expected:
        return SegmentDefect("", f"page magic {magic:#06x}, expected {expected:#06x} for PostgreSQL {major}")
    if not info & XLP_LONG_HEADER:
        return SegmentDefect("", "first page has no long header")
    if sysid != system_identifier:
        return SegmentDefect("", f"system identifier {sysid}, the backup's cluster is {system_identifier}")
    if seg_size < 1 << 20 or seg_size > 1 << 30 or seg_size & (seg_size - 1):
        return SegmentDefect("", f"segment size {seg_size} in its header is not a power of two in 1 MiB..1 GiB")
    if blcksz not in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
        return SegmentDefect("", f"page size {blcksz} in its header is not a PostgreSQL block size")
    return WalGeometry(magic, system_identifier, seg_size, blcksz)


@dataclass
class PageHeaders:
    """The first 16 header bytes of consecutive pages, gathered chunk by chunk as a segment is read.

    Kept as two 64-bit words per page (magic | info << 16 | tli << 32, and xlp_pageaddr) so each
    chunk costs two strided ``tolist`` calls and the checks compare whole lists in C.
    """

    words: list[int]
    addrs: list[int]

    @classmethod
    def empty(cls) -> PageHeaders:
        return cls([], [])

    def add(self, chunk: memoryview, page: int) -> None:
        """Append the headers of every page in ``chunk`` (a whole number of pages)."""
        q = chunk.cast("Q")
        self.words += q[0 :: page // 8].tolist()
        self.addrs += q[1 :: page // 8].tolist()


def check_segment_bytes(buf: memoryview, name: str, tli: int, number: int, geo: WalGeometry) -> SegmentDefect | None:
    """Every page header of one whole segment held in memory (see :func:`check_headers`)."""
    headers = PageHeaders.empty()
    headers.add(buf[: geo.segment_size], geo.page_size)
    return check_headers(headers, name, tli, number, geo)


def check_headers(h: PageHeaders, name: str, tli: int, number: int, geo: WalGeometry) -> SegmentDefect | None:
    """Every page header of one segment; zero pages are allowed only after the last written page.

    A segment switched early (``pg_switch_wal``, ``archive_timeout``) ends in zeroed pages; a
    valid page after a zeroed one means the zeros are damage, and recovery would stop there.
    """
    page = geo.page_size
    words = h.words
    first_zero = words.index(0) if 0 in words else len(words)
    if first_zero == 0:
        return SegmentDefect(name, "first page is zeroed")
    if any(words[first_zero:]):
        again = first_zero + next(i for i, w in enumerate(words[first_zero:]) if w)
        return SegmentDefect(
            name,
            f"pages {first_zero}..{again - 1} (offset {first_zero * page}, {(again - first_zero) * page} bytes) "
            "are zeroed inside written WAL",
        )
    base = number * geo.segment_size
    addrs = h.addrs[:first_zero]
    expected = list(range(base, base + first_zero * page, page))
    written = words[:first_zero]
    for word in set(written):  # a handful of distinct (magic, flags, timeline) values per segment
        problem = _header_word_problem(word, tli, geo)
        if problem:
            bad = written.index(word)
            return SegmentDefect(name, f"page {bad} (offset {bad * page}): {problem}")
    if addrs != expected:
        bad = next(i for i, (a, e) in enumerate(zip(addrs, expected, strict=True)) if a != e)
        return SegmentDefect(
            name,
            f"page {bad} claims WAL position {_lsn(addrs[bad])}, expected {_lsn(expected[bad])}: "
            "the file holds another segment's WAL (renamed or misplaced)",
        )
    tlis = [w >> 32 for w in written] if len({w >> 32 for w in set(written)}) > 1 else []
    if tlis != sorted(tlis):
        bad = next(i for i in range(1, len(tlis)) if tlis[i] < tlis[i - 1])
        return SegmentDefect(name, f"page {bad} goes back to timeline {tlis[bad]} after {tlis[bad - 1]}")
    return None


def _header_word_problem(word: int, tli: int, geo: WalGeometry) -> str | None:
    magic, info, page_tli = word & 0xFFFF, (word >> 16) & 0xFFFF, word >> 32
    if magic != geo.magic:
        return f"magic {magic:#06x}, expected {geo.magic:#06x}"
    if info > XLP_ALL_FLAGS:  # flags are unsigned: any bit above the defined ones makes it larger
        return f"invalid header flags {info:#06x}"
    if page_tli > tli:
        return f"written on timeline {page_tli}, the file name says timeline {tli}"
    return None


def _lsn(pos: int) -> str:
    return f"{pos >> 32:X}/{pos & 0xFFFFFFFF:X}"


CHUNK = 1 << 20  # read in cache-friendly chunks: one 16 MiB read copies through main memory, and costs ~25 %


def scan_segment(path: str, f: WalFile, geo: WalGeometry, buf: bytearray) -> SegmentDefect | None:
    """Read one segment chunk by chunk into ``buf`` (reused across calls) and check its page headers."""
    if f.size != geo.segment_size:
        return SegmentDefect(f.name, f"{f.size} bytes, expected {geo.segment_size}")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return SegmentDefect(f.name, f"cannot be read: {exc.strerror}")
    chunk = max(geo.page_size, min(CHUNK, geo.segment_size))
    view = memoryview(buf)[:chunk]
    headers = PageHeaders.empty()
    got = 0
    try:
        while got < geo.segment_size:
            filled = 0
            while filled < chunk:
                n = os.readv(fd, [view[filled:]])
                if n == 0:
                    return SegmentDefect(
                        f.name, f"ended after {got + filled} bytes while reading, expected {geo.segment_size}"
                    )
                filled += n
            headers.add(view, geo.page_size)
            got += chunk
    except OSError as exc:
        return SegmentDefect(f.name, f"read failed: {exc.strerror}")
    finally:
        os.close(fd)
    return check_headers(headers, f.name, f.timeline, f.number, geo)


def span_bytes(first: str, last: str) -> int:
    """Bytes between two segment names at the default 16 MiB segment size (a space estimate)."""
    try:
        a, b = split_name(first, 0x100), split_name(last, 0x100)
    except ValueError:
        return 0
    return max(0, b[1] - a[1] + 1) * (16 << 20)
