"""Page-header checks on segments built here byte by byte from PostgreSQL's documented layout."""

from __future__ import annotations

import struct

import pytest

from drills.engines.postgres.wal import WalGeometry, check_segment_bytes, geometry_of
from drills.osutil import readable_by

PAGE = 8192
SEG = 1 << 20
GEO = WalGeometry(magic=0xD110, system_identifier=42, segment_size=SEG, page_size=PAGE)


def segment(number: int, written_pages: int, tli: int = 1) -> bytearray:
    """A 1 MiB segment whose first ``written_pages`` carry headers (the first a long header); the rest zero."""
    buf = bytearray(SEG)
    for p in range(written_pages):
        info = 0x0002 if p == 0 else (0x0001 if p % 3 == 0 else 0)
        struct.pack_into("<HHIQI", buf, p * PAGE, 0xD110, info, tli, number * SEG + p * PAGE, 0)
        buf[p * PAGE + 40 : p * PAGE + 48] = b"\x01" * 8  # some record bytes
    struct.pack_into("<QII", buf, 24, 42, SEG, PAGE)
    return buf


def check(buf: bytearray, number: int = 5, tli: int = 1) -> str | None:
    d = check_segment_bytes(memoryview(buf), "SEG", tli, number, GEO)
    return None if d is None else d.problem


def test_a_fully_written_segment_and_one_switched_early_are_clean() -> None:
    assert check(segment(5, SEG // PAGE)) is None
    assert check(segment(5, 3)) is None  # pg_switch_wal: the rest of the segment is zeroed


def test_zeroed_pages_followed_by_written_ones_are_named_with_their_offset() -> None:
    buf = segment(5, SEG // PAGE)
    buf[16 * PAGE : 24 * PAGE] = bytes(8 * PAGE)
    assert check(buf) == "pages 16..23 (offset 131072, 65536 bytes) are zeroed inside written WAL"


def test_first_page_zeroed() -> None:
    buf = segment(5, 4)
    buf[:PAGE] = bytes(PAGE)
    assert check(buf) == "first page is zeroed"


def test_wrong_magic_wrong_position_wrong_timeline_and_bad_flags() -> None:
    buf = segment(5, 10)
    struct.pack_into("<H", buf, 7 * PAGE, 0xD113)
    assert check(buf) == "page 7 (offset 57344): magic 0xd113, expected 0xd110"
    assert check(segment(6, 10), number=5) == (
        "page 0 claims WAL position 0/600000, expected 0/500000: "
        "the file holds another segment's WAL (renamed or misplaced)"
    )
    assert (
        check(segment(5, 10, tli=2), tli=1) == "page 0 (offset 0): written on timeline 2, the file name says timeline 1"
    )
    buf = segment(5, 10)
    struct.pack_into("<H", buf, 4 * PAGE + 2, 0x0010)
    assert check(buf) == "page 4 (offset 32768): invalid header flags 0x0010"


def test_pages_of_an_older_timeline_may_start_a_newer_timelines_segment_but_never_follow_it() -> None:
    buf = segment(5, 10, tli=2)
    for p in range(4):
        struct.pack_into("<I", buf, p * PAGE + 4, 1)  # copied from timeline 1 up to the switch
    assert check(buf, tli=2) is None
    struct.pack_into("<I", buf, 8 * PAGE + 4, 1)
    assert check(buf, tli=2) == "page 8 goes back to timeline 1 after 2"


def test_geometry_comes_from_the_long_header_and_must_match_the_cluster() -> None:
    head = bytes(segment(5, 1)[:64])
    assert geometry_of(head, 15, 42) == GEO
    wrong = geometry_of(head, 15, 43)
    assert not isinstance(wrong, WalGeometry) and "system identifier 42, the backup's cluster is 43" in wrong.problem
    other = geometry_of(head, 16, 42)
    assert not isinstance(other, WalGeometry) and "expected 0xd113 for PostgreSQL 16" in other.problem


@pytest.mark.parametrize(
    ("mode", "owner", "group", "uid", "gids", "ok"),
    [
        (0o600, 100, 100, 100, [100], True),
        (0o600, 100, 100, 200, [100], False),
        (0o640, 100, 100, 200, [100], True),
        (0o604, 100, 100, 200, [300], True),
        (0o000, 100, 100, 0, [], True),  # root
        (0o060, 100, 100, 100, [100], False),  # the owner's bits decide for the owner
    ],
)
def test_readable_by_follows_unix_permission_rules(
    mode: int, owner: int, group: int, uid: int, gids: list[int], ok: bool
) -> None:
    assert readable_by(0o100000 | mode, owner, group, uid, gids) is ok
