"""Hostile runbooks: each is refused fast, with FILE:LINE and one line of text, never a traceback.

The probes come from issue 8: a "billion laughs" alias file grew past 2.6 GB in 20 s, duplicate
keys silently kept the last value, ``rto_seconds: true`` was accepted as 1, ``.inf`` timeouts and
deadlines past PostgreSQL's statement_timeout validated and failed at run time, NUL characters
and deep nesting gave tracebacks.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from hostile_yaml import BASE, laughs

from drills.cli import main
from drills.errors import RunbookError
from drills.runbook import load_runbook


def refuse(tmp_path: Path, text: str | bytes, capsys: pytest.CaptureFixture[str]) -> tuple[RunbookError, str, float]:
    """Load `text` as a runbook; return the error, what `drill validate` printed, and its time."""
    path = tmp_path / "rb.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(RunbookError) as info:
        load_runbook(path, check_paths=False)
    capsys.readouterr()
    start = time.perf_counter()
    code = main(["validate", "--no-check-paths", str(path)])
    elapsed = time.perf_counter() - start
    out = capsys.readouterr()
    assert code == 2, out
    assert out.out == ""
    assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err  # one line, no stack
    assert out.err.startswith(f"RunbookError: {path}:")
    return info.value, out.err, elapsed


def test_billion_laughs_is_refused_at_the_anchor_that_explodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err, text, elapsed = refuse(tmp_path, BASE + laughs(), capsys)
    assert elapsed < 5, elapsed  # unbounded, it took 20 s and 2.6 GB; the speed is benchmarks/bench_runbook_loader.py
    # a0..a4 expand to 66,430 values; a5 (line 4 + 6) to 597,871: past the bound of 100,000
    assert err.line == 9
    assert "aliases" in text


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err, text, _ = refuse(tmp_path, BASE + "tags: &t {a: *t}\n", capsys)
    assert err.line == 4 and "contains it" in text


def test_aliases_and_merge_keys_within_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(
        BASE
        + textwrap.dedent(
            """\
            states:
              restore: &slow {attempts: 3, timeout_seconds: 600}
              await_ready: {<<: *slow, attempts: 5}
            """
        )
    )
    states = load_runbook(path, check_paths=False).runbook.states
    assert states["restore"].attempts == 3
    assert (states["await_ready"].attempts, states["await_ready"].timeout_seconds) == (5, 600)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (BASE + "objectives: {rto_seconds: 1}\n", 4, "'objectives' appears twice"),
        (BASE.replace("archive: shop.dump}", "archive: shop.dump, archive: other.dump}"), 2, "'archive' appears"),
        (BASE + "tags:\n  team: a\n  owner: b\n  team: c\n", 7, "'team' appears twice"),
    ],
    ids=["top level", "flow mapping", "nested"],
)
def test_duplicate_keys_are_refused_at_the_second_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, words: str
) -> None:
    err, out, _ = refuse(tmp_path, text, capsys)
    assert err.line == line and words in out


NUMBERS = [
    ("rto_seconds: 600", "rto_seconds: true", "objectives.rto_seconds", "not true/false"),
    ("rto_seconds: 600", "rto_seconds: 600.5", "objectives.rto_seconds", "valid integer"),
    ("rto_seconds: 600", "rto_seconds: 9007199254741", "objectives.rto_seconds", "24 days"),
    ("rpo_seconds: 60", "rpo_seconds: yes", "objectives.rpo_seconds", "not true/false"),
    ("rpo_seconds: 60", "rpo_seconds: 100000000000000000", "objectives.rpo_seconds", "less than or equal"),
]


@pytest.mark.parametrize(("this", "that", "field", "words"), NUMBERS, ids=[n[1] for n in NUMBERS])
def test_objectives_are_integers_a_run_and_its_evidence_can_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], this: str, that: str, field: str, words: str
) -> None:
    err, out, _ = refuse(tmp_path, BASE.replace(this, that), capsys)
    assert (err.line, err.field) == (3, field)
    assert words in out


TAILS = [
    ("deadline_seconds: 2073601", "deadline_seconds", "24 days"),  # 2**31-1 ms is ~24.8 days
    ("deadline_seconds: true", "deadline_seconds", "not true/false"),
    ("states: {restore: {timeout_seconds: .inf}}", "states.restore.timeout_seconds", "finite"),
    ("states: {restore: {timeout_seconds: .nan}}", "states.restore.timeout_seconds", "finite"),
    ("states: {restore: {timeout_seconds: 1.0e+300}}", "states.restore.timeout_seconds", "24 days"),
    ("states: {restore: {backoff_max_seconds: .inf}}", "states.restore.backoff_max_seconds", "finite"),
    ("states: {restore: {attempts: true}}", "states.restore.attempts", "not true/false"),
    ("connect: {host: h, port: true}", "connect.port", "not true/false"),
    ("validators: {parallelism: true}", "validators.parallelism", "not true/false"),
    ("validators: {row_counts: {t: {min: true}}}", "validators.row_counts.t.min", "not true/false"),
    ("validators: {row_counts: {t: {equals: 9007199254740992}}}", "validators.row_counts.t.equals", "less than"),
    ("validators: {row_counts: {t: {within_pct: .inf}}}", "validators.row_counts.t.within_pct", "finite"),
    ("validators: {smoke: [{name: n, sql: select 1, expect: 1.0e+300}]}", "validators.smoke.0.expect", "2**53"),
    ("validators: {smoke: [{name: n, sql: select 1, expect: .nan}]}", "validators.smoke.0.expect", "2**53"),
]


@pytest.mark.parametrize(("tail", "field", "words"), TAILS, ids=[t[0] for t in TAILS])
def test_every_number_is_bounded_to_what_a_run_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tail: str, field: str, words: str
) -> None:
    err, out, _ = refuse(tmp_path, BASE + tail + "\n", capsys)
    assert (err.line, err.field) == (4, field)
    assert words in out


def test_the_longest_deadline_loads_and_a_long_rto_keeps_the_default_deadline_within_it(tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(BASE + "deadline_seconds: 2073600\n")
    assert load_runbook(path, check_paths=False).runbook.effective_deadline_seconds == 24 * 86400
    path.write_text(BASE.replace("rto_seconds: 600", "rto_seconds: 2000000"))
    assert load_runbook(path, check_paths=False).runbook.effective_deadline_seconds == 24 * 86400
    assert 24 * 86400 * 1000 < 2**31 - 1  # PostgreSQL's statement_timeout (ms) can hold the whole deadline


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (BASE + "description: a\x00b\n", 4, "U+0000"),
        (BASE + "description: a\x1bb\n", 4, "U+001B"),
        (BASE + 'description: "a\\0b"\n', 4, "U+0000"),  # escaped: passes the reader, caught on the value
        (BASE + 'description: "a\\eb"\n', 4, "U+001B"),
        (BASE + 'tags: {"x\\u0007": y}\n', 4, "U+0007"),  # in a key
        (BASE + 'description: "\\ud800"\n', 4, "U+D800"),  # a lone surrogate cannot be written as UTF-8
        (BASE + "description: |\n  one\n  two\x7f\n", 6, "U+007F"),
    ],
    ids=["raw NUL", "raw ESC", "escaped NUL", "escaped ESC", "BEL in a key", "surrogate", "DEL in a block"],
)
def test_control_characters_are_refused_with_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, words: str
) -> None:
    err, out, _ = refuse(tmp_path, text, capsys)
    assert err.line == line and words in out


@pytest.mark.parametrize("depth", [33, 20_000])
def test_deep_nesting_is_refused_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int) -> None:
    err, out, elapsed = refuse(tmp_path, BASE + "tags: " + "[" * depth + "]" * depth + "\n", capsys)
    assert err.line == 4 and "nested more than 32 levels" in out
    assert elapsed < 5  # generous: a loaded CI machine, not a speed target


def test_nesting_a_runbook_can_use_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 31 levels under the document: the extra nesting is refused by the model, not by the loader
    err, out, _ = refuse(tmp_path, BASE + "tags: " + "[" * 30 + "]" * 30 + "\n", capsys)
    assert err.field == "tags" and "nested" not in out


def test_the_size_cap_is_one_mebibyte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    padding = (1 << 20) - len(BASE.encode()) - 2
    path = tmp_path / "rb.yaml"
    path.write_text(BASE + "#" + "x" * padding + "\n")
    assert path.stat().st_size == 1 << 20
    assert load_runbook(path, check_paths=False).runbook.name == "shop"
    err, out, elapsed = refuse(tmp_path, BASE + "#" + "x" * (padding + 1) + "\n", capsys)
    assert err.line is None and "larger than 1024 KiB" in out
    assert elapsed < 5  # generous: a loaded CI machine, not a speed target


def test_a_file_with_too_many_values_stops_being_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    many = BASE + "tags: [" + ",".join(["1"] * 300_000) + "]\n"  # under 1 MiB, 300,000 values
    err, out, elapsed = refuse(tmp_path, many, capsys)
    assert err.line == 4 and "more than 100,000 values" in out
    assert elapsed < 15  # bounded by the node limit, not by the file (pure-Python YAML: ~2 s here)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (BASE + "deadline_seconds: " + "9" * 5000 + "\n", 4, "number of 5000 characters"),
        (
            BASE.replace(
                "kind: postgres-dump, archive: shop.dump", "kind: postgres-dump, archive: shop.dump, "
            ).replace("}", "taken_at: 2026-13-45}", 1),
            2,
            "cannot read this value",
        ),
        (BASE + "description: !!python/object/apply:os.system [id]\n", 4, "not valid YAML"),
        (BASE + "---\nname: two\n", 4, "not valid YAML"),
        (BASE + "tags: *nowhere\n", 4, "not valid YAML"),
        (BASE + "tags: {[a]: b}\n", 4, "not valid YAML"),
        (b"name: shop\ndescription: \xff\xfe\n", 2, "not UTF-8"),
    ],
    ids=["5000-digit int", "month 13", "python tag", "two documents", "undefined alias", "list key", "latin-1"],
)
def test_malformed_yaml_values_are_refused_with_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, line: int, words: str
) -> None:
    err, out, _ = refuse(tmp_path, text, capsys)
    assert err.line == line and words in out, out


def test_a_huge_value_is_shown_cut_to_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = refuse(tmp_path, BASE.replace("name: shop", "name: '" + "X" * 100_000 + "'"), capsys)
    assert len(out) < 400


def test_a_path_the_system_cannot_check_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(BASE + "evidence: {signing_key: " + "k" * 5000 + "}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{path}:4: evidence.signing_key: cannot check the path" in err


def test_a_directory_is_not_a_runbook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-check-paths", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"RunbookError: {tmp_path}: cannot read the runbook") and "Traceback" not in err
