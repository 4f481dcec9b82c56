"""The rules of a MariaDB binlog replay plan and of following a replay, on hand-made chains and output.

What a target needs, what ``latest`` may end at, and that the replay tracker can only ever turn
an odd output into a failure. The same rules run against real binlogs and a real mariadb-binlog
in tests/functional/test_local_mariadb_corpus.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.engines.mariadb.binlog import Chain, Defect, Event, FileScan
from drills.engines.mariadb.plan import Position, ReplayPlan, plan_replay
from drills.engines.mariadb.replay import ReplayTracker
from drills.errors import BackupDefect

T0 = 1_796_000_000  # whole seconds, UTC
ROTATE, STOP, XID, FDE = 4, 3, 16, 15


def scan(name: str, *, start: int = 4, end: int = 1000, events: int = 10, first: int = T0, last: int = T0 + 9,
         kind: int = ROTATE, in_use: bool = False, defect: Defect | None = None, stop: Event | None = None,
         printed: int | None = None, rotate_to: str | None = None) -> FileScan:  # fmt: skip
    return FileScan(
        name=name,
        size=end if defect is None else end + 30,
        start=start,
        end=end,
        events=events,
        first_ts=first,
        last_ts=last,
        last_kind=kind,
        in_use=in_use,
        checksums=True,
        server_version="10.11.19-MariaDB",
        rotate_to=rotate_to,
        defect=defect,
        stop=stop,
        printed_before_stop=events if printed is None else printed,
    )


def chain(*scans: FileScan, missing: tuple[str, ...] = (), names: tuple[str, ...] | None = None) -> Chain:
    """A chain as inspect_chain builds it: sequence order, the first defect breaks it."""
    all_names = names or tuple(sorted({s.name for s in scans} | set(missing)))
    by_name = {s.name: s for s in scans}
    prefix: list[FileScan] = []
    defects: list[Defect] = []
    beyond: list[str] = []
    for n in all_names:
        if defects and n in by_name:
            beyond.append(n)
        if n in missing:
            defects.append(Defect(n, "missing", "missing from /binlogs"))
            continue
        s = by_name[n]
        if not defects:
            prefix.append(s)
        if s.defect:
            defects.append(s.defect)
    return Chain(
        directory=Path("/binlogs"),
        start_file=all_names[0],
        start_position=scans[0].start,
        names=all_names,
        scans=tuple(scans),
        prefix=tuple(prefix),
        broken=defects[0] if defects else None,
        beyond=tuple(beyond),
        later=tuple(defects[1:]),
        index=None,
    )


B1, B2, B3, B4 = (f"mysql-bin.00000{i}" for i in range(1, 5))


# ---------------------------------------------------------------- time targets


def test_a_time_target_replays_through_the_first_event_at_or_after_it() -> None:
    c = chain(
        scan(B1, start=300, end=900, rotate_to=B2),
        scan(B2, end=800, stop=Event(500, 540, T0 + 20, XID), printed=7, first=T0 + 10, last=T0 + 30),
        scan(B3, end=700, first=T0 + 31, last=T0 + 40, kind=STOP),
    )
    plan = plan_replay(c, T0 + 20, T0)
    assert plan.files == (B1, B2)
    assert plan.requested == Position(B2, 500, T0 + 20)
    assert plan.expect == ((B1, 900, 10), (B2, 500, 7))
    assert plan.stop_ts == T0 + 20 and plan.stop_position is None
    assert plan.not_needed == ()


def test_a_stop_at_the_next_files_first_event_replays_all_of_the_file_before() -> None:
    c = chain(
        scan(B1, start=300, end=900, rotate_to=B2),
        scan(B2, end=800, stop=Event(4, 256, T0 + 20, FDE), printed=0, first=T0 + 20),
    )
    plan = plan_replay(c, T0 + 20, T0)
    assert plan.files == (B1,)
    assert plan.requested == Position(B1, 900, T0 + 9)


def test_defects_after_the_target_are_facts_not_refusals() -> None:
    damaged = Defect(B3, "checksum", "bad checksum in the Xid event at 600", 600)
    c = chain(
        scan(B1, start=300, end=900),
        scan(B2, end=800, stop=Event(500, 540, T0 + 20, XID), printed=7),
        scan(B3, end=600, defect=damaged),
        missing=(B4,),
    )
    plan = plan_replay(c, T0 + 20, T0)
    assert plan.files == (B1, B2)
    assert plan.not_needed == (str(damaged), f"{B4}: missing from /binlogs")


def test_damage_in_the_stop_file_after_the_stop_event_is_not_needed() -> None:
    damaged = Defect(B2, "truncated", "truncated at 830 bytes", 700)
    c = chain(scan(B1, start=300, end=900), scan(B2, end=700, defect=damaged, stop=Event(500, 540, T0 + 20, XID)))
    assert plan_replay(c, T0 + 20, T0).not_needed == (str(damaged),)


def test_a_break_before_the_target_is_a_backup_defect_naming_it() -> None:
    c = chain(scan(B1, start=300, end=900), scan(B3, end=700, last=T0 + 40), missing=(B2,))
    with pytest.raises(BackupDefect, match=rf"chain breaks before target_time .*{B2}: missing from /binlogs"):
        plan_replay(c, T0 + 20, T0)


def test_a_target_outside_the_range_is_a_backup_defect() -> None:
    c = chain(scan(B1, start=300, end=900, kind=STOP))
    with pytest.raises(BackupDefect, match="after the last event in the binlogs"):
        plan_replay(c, T0 + 20, T0)
    with pytest.raises(BackupDefect, match="before the backup finished"):
        plan_replay(c, T0 - 5, T0)


# ---------------------------------------------------------------- latest


def test_latest_ends_where_the_archive_ends() -> None:
    c = chain(scan(B1, start=300, end=900, rotate_to=B2), scan(B2, end=800, rotate_to=B3), missing=(B3,))
    plan = plan_replay(c, None, T0)
    assert plan.files == (B1, B2) and plan.stop_position == 800
    assert plan.requested == Position(B2, 800, T0 + 9)
    assert f"ends with a Rotate to {B3}, which is not here" in plan.chain_end


def test_latest_ends_at_the_last_whole_event_of_a_live_copy() -> None:
    partial = Defect(B2, "truncated", "truncated at 830 bytes: the Xid event at 800 needs 31 bytes", 800)
    c = chain(scan(B1, start=300, end=900), scan(B2, end=800, kind=XID, in_use=True, defect=partial))
    plan = plan_replay(c, None, T0)
    assert plan.requested == Position(B2, 800, T0 + 9) and plan.stop_position == 800
    assert "still open on the source" in plan.chain_end


@pytest.mark.parametrize(
    ("c", "problem"),
    [
        (chain(scan(B1, start=300, end=900), scan(B3, end=700), missing=(B2,)), f"cannot reach: {B3}"),
        (
            chain(
                scan(B1, start=300, end=900), scan(B2, end=500, kind=XID, defect=Defect(B2, "truncated", "cut", 500))
            ),
            f"{B2}: cut",
        ),  # the server had closed it: bytes it wrote are gone
        (
            chain(scan(B1, start=300, end=400, defect=Defect(B1, "checksum", "bad checksum at 400", 400))),
            "bad checksum at 400",
        ),
    ],
)
def test_latest_refuses_a_break_that_hides_what_the_backup_holds(c: Chain, problem: str) -> None:
    with pytest.raises(BackupDefect, match=rf"chain breaks at .*{problem}.*latest can only restore until"):
        plan_replay(c, None, T0)


# ---------------------------------------------------------------- following the output


def _output(files: list[list[int]], *, start: int, skip_after: dict[int, int] | None = None) -> bytes:
    """mariadb-binlog's shape: per file a format description at 4, then events ending at the given positions."""
    out = [b"/*!50530 SET @@SESSION.PSEUDO_SLAVE_MODE=1*/;", b"DELIMITER /*!*/;"]
    for k, ends in enumerate(files):
        out += [b"# at 4", b"#261130 23:26:30 server id 1  end_log_pos 256 CRC32 0xd0e2674f \tStart: binlog v 4"]
        out += [b"BINLOG '", b"JgYOaw8BAAAA/AAAAAABAAAAAAQAMTAuMTEuMTkt", b"'/*!*/;"]
        at = start if k == 0 else 256
        for n, end in enumerate(ends):
            if skip_after and skip_after.get(k) == n:
                break
            out += [
                f"# at {at}".encode(),
                f"#261130 23:26:31 server id 1  end_log_pos {end} CRC32 0x1 \tXid = 1".encode(),
            ]
            out.append(b"COMMIT/*!*/;")
            at = end
    out += [b"DELIMITER ;", b"# End of log file", b"ROLLBACK /* added by mysqlbinlog */;"]
    return b"\n".join(out) + b"\n"


def _plan(files: list[list[int]], start: int) -> ReplayPlan:
    scans = [
        scan(f"mysql-bin.00000{k + 1}", start=start if k == 0 else 4, end=ends[-1], printed=len(ends) + 1)
        for k, ends in enumerate(files)
    ]
    return plan_replay(chain(*scans), None, T0)


def _feed(data: bytes, tracker: ReplayTracker, size: int) -> ReplayTracker:
    for i in range(0, len(data), size):
        tracker.feed(data[i : i + size])
    tracker.finish()
    return tracker


@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
def test_the_tracker_follows_every_file_whatever_the_chunks(size: int) -> None:
    files = [[350, 400, 480], [300, 360]]
    plan = _plan(files, 300)
    tracker = _feed(_output(files, start=300), ReplayTracker(plan.files, 300), size)
    assert tracker.shortfall(plan) is None
    reached = tracker.reached()
    assert reached is not None and (reached.file, reached.pos) == ("mysql-bin.000002", 360)


def test_a_file_emitted_short_is_a_shortfall_even_when_the_last_one_is_complete() -> None:
    files = [[350, 400, 480], [300, 360]]
    plan = _plan(files, 300)
    data = _output(files, start=300, skip_after={0: 2})  # the rest of the first file never came out
    short = _feed(data, ReplayTracker(plan.files, 300), 4096).shortfall(plan)
    assert short is not None
    assert short[0] == Position("mysql-bin.000001", 400, None)
    assert "emitted until position 400, the replay needs it until 480" in short[1]


def test_a_statement_imitating_a_header_line_can_only_fail_the_replay() -> None:
    files = [[350, 400, 480]]
    plan = _plan(files, 300)
    data = _output(files, start=300).replace(
        b"COMMIT/*!*/;", b"insert into t values ('\n#261130 23:26:31 server id 1  end_log_pos 480 x')/*!*/;", 1
    )
    short = _feed(data, ReplayTracker(plan.files, 300), 4096).shortfall(plan)
    assert short is not None and "emitted 5 events, the scan found 4" in short[1]


def test_a_client_error_line_names_the_event_it_was_printed_for() -> None:
    files = [[350, 400, 480], [300, 360]]
    plan = _plan(files, 300)
    data = _output(files, start=300)
    tracker = _feed(data, ReplayTracker(plan.files, 300), 7)
    lines = data.split(b"\n")
    line = next(i for i, ln in enumerate(lines, 1) if ln.startswith(b"#261130") and b"end_log_pos 360" in ln) + 1
    assert tracker.event_at_line(line) == Position("mysql-bin.000002", 300, None)
    assert tracker.event_at_line(1) is None  # before any event
