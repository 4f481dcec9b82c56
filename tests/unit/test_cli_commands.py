"""`drill` subcommands in-process, through `main()` as the console script calls it: their real paths and errors.

No database server: drills run the recorder backend (the registry's factory swapped for it), with stand-ins
for the connect probe and the validator runner; AWS is moto. Every error must be one line on stderr with its
exit code, never a traceback (tests/e2e runs the same commands as separate processes).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog
from moto import mock_aws
from recorder import Recorder

from drills import api, cleanup, cli, journal
from drills.backends.base import StepContext
from drills.evidence.keys import generate_keypair
from drills.machine import Drill
from drills.resources import Resource, TeardownResult
from validators.base import Finding, ValidationReport
from validators.endpoint import Endpoint

RUNBOOK = textwrap.dedent(
    """\
    name: cli-test
    source: {kind: postgres-dump, archive: dump.pgc}
    objectives: {rto_seconds: 60}
    evidence: {dir: evidence, signing_key: drill.key}
    """
)


class Killed(BaseException):
    """The runner dies (SIGKILL) as teardown begins."""


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """`main()` points structlog at the stderr of the moment (pytest's capture, closed after the test): restore
    the configuration, or every later test in this process logs into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    (tmp_path / "dump.pgc").write_bytes(b"x")
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    return tmp_path / "rb.yaml"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """`drill run` drills this recorder; its connect probe and validators answer without a server."""
    backend = Recorder()

    def factory(_name: str) -> Any:
        return lambda _source, _settings: backend

    def validate(_d: Drill) -> ValidationReport:
        return ValidationReport(
            (Finding("row_counts", "orders rows", passed=True, expected=">= 1", actual=5),), None, None, 3
        )

    monkeypatch.setattr(api, "backend_factory", factory)
    monkeypatch.setattr(cleanup, "backend_factory", factory)
    monkeypatch.setattr(api, "_probe", lambda _ep: "16.4")
    monkeypatch.setattr(api, "_validate", validate)
    return backend


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, kind: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{kind}: "), err
    assert "Traceback" not in err and all(w in lines[0] for w in words), err


# ---------------------------------------------------------------- validate, schema, keygen


def test_validate_and_schema(runbook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--no-check-paths", str(runbook))
    assert code == 0
    assert out == f"{runbook}: ok (cli-test: postgres-dump, RTO objective 60s) (paths and backup not checked)\n"
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and "source" in schema["properties"] and schema["required"][:1] == ["name"]


def test_validate_a_runbook_with_a_typo_names_file_line_and_field(
    runbook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runbook.write_text(RUNBOOK.replace("rto_seconds: 60", "rto_secs: 60"))
    code, out, err = run(capsys, "validate", "--no-check-paths", str(runbook))
    assert (code, out) == (2, "")
    one_line_error(err, "RunbookError", f"{runbook}:3:", "rto_secs")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k" / "drill.key"
    code, out, _ = run(capsys, "keygen", "--out", str(key))
    assert code == 0
    assert re.fullmatch(
        rf"private key: {key}\npublic key:  {key.with_suffix('.pub')}\nkeyid:       sha256:[0-9a-f]{{64}}\n", out
    ), out
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    code, _, err = run(capsys, "keygen", "--out", str(key))
    assert code == 2 and key.read_bytes() == before  # the path is the user's choice: bad input
    one_line_error(err, "InputError", f"{key} already exists; refusing to overwrite a key", "--force")
    assert run(capsys, "keygen", "--out", str(key), "--force")[0] == 0 and key.read_bytes() != before


def test_a_bad_duration_is_refused_by_the_parser(runbook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", str(runbook), "--keep", "6 hours"])
    assert info.value.code == 2
    assert "not a duration: '6 hours' (use e.g. 30m, 6h, 2d)" in capsys.readouterr().err


# ---------------------------------------------------------------- run, verify, report, runs, teardown


def test_run_prints_the_summary_and_the_kept_endpoint(
    runbook: Path, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "run", str(runbook), "--keep", "2h")
    assert (code, out) == (0, "")
    assert re.search(r"^drill \S+: PASSED$", err, re.M), err
    assert "  findings: 1 passed, 0 failed\n" in err
    endpoint = Endpoint("postgres", "/nowhere", 1, "db", "u").public()
    assert f"  kept for 7200s for inspection: {endpoint}\n  `drill sweep` removes it after its expiry\n" in err
    assert recorder.torn_down == []  # kept, not torn down


def test_run_json_verify_report_and_runs(
    runbook: Path, recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "run", str(runbook), "--json")
    res = json.loads(out)
    assert code == 0 and res["verdict"] == "passed" and res["kept"] is None
    evidence, pub = res["evidence"], str(tmp_path / "drill.pub")

    code, out, _ = run(capsys, "verify", evidence, "--key", pub)
    assert code == 0 and out.startswith(f"{evidence}: signature and payload OK\n") and "passed" in out

    report = tmp_path / "report.md"
    code, out, _ = run(capsys, "report", evidence, "--key", pub, "--out", str(report))
    assert (code, out) == (0, f"report written to {report}\n")
    assert report.read_text().startswith(f"# Restore drill {res['run_id']}: PASSED")
    code, _, err = run(capsys, "report", evidence, "--key", pub, "--out", str(tmp_path / "no" / "r.md"))
    assert code == 2
    one_line_error(err, "InputError", "cannot write the report")

    code, out, _ = run(capsys, "runs")
    assert code == 0 and re.search(rf"^{res['run_id']}  cli-test +finished +teardown +passed\s*$", out, re.M), out
    code, out, _ = run(capsys, "runs", "--json")
    listed = {r["run_id"]: r for r in json.loads(out)}
    assert listed[res["run_id"]]["status"] == "finished" and listed[res["run_id"]]["outstanding"] == []


@pytest.mark.parametrize("which", ["evidence file", "--key"])
def test_verify_a_file_that_is_not_there_is_bad_input(
    runbook: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    pub = tmp_path / "drill.pub"
    args = ["verify", str(tmp_path / "nope.json"), "--key", str(pub)]
    if which == "--key":
        args = ["verify", str(pub), "--key", str(tmp_path / "nope.pub")]
    code, _, err = run(capsys, *args)
    assert code == 2
    one_line_error(err, "InputError", which, "nope", "does not exist")


def test_teardown_finishes_what_a_killed_run_left(
    runbook: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def killed(_r: Resource, _c: StepContext) -> TeardownResult:
        raise Killed

    recorder.teardown = killed  # type: ignore[method-assign,assignment]
    with pytest.raises(Killed):
        cli.main(["run", str(runbook)])
    del recorder.teardown  # the next process: a runner that can tear down

    code, out, _ = run(capsys, "runs")
    (line,) = [x for x in out.splitlines() if "cli-test" in x]
    run_id = line.split()[0]
    assert f"  3 resource(s) left: drill teardown {run_id}" in line, line
    # its runner's pid is this test's, alive: teardown refuses to race a run that may still be going
    code, _, err = run(capsys, "teardown", run_id)
    assert code == 2
    one_line_error(err, "InputError", f"run {run_id} is still running")

    monkeypatch.setattr(journal, "_alive", lambda _pid: False)  # now the runner is gone
    code, out, _ = run(capsys, "teardown", run_id)
    assert code == 0
    aborted, *removed = out.splitlines()  # the signed record of the aborted run first, then each resource
    assert [x.split()[:3] for x in removed] == [
        ["removed:", "thing", "b"],
        ["removed:", "thing", "a"],
        ["removed:", "scratch-dir", removed[2].split()[2]],
    ]
    assert recorder.torn_down == ["b", "a"]
    assert aborted.startswith(f"run {run_id} was aborted: signed record "), aborted
    assert Path(aborted.rsplit(" ", 1)[1]).is_file()
    assert run(capsys, "teardown", run_id)[1].startswith(f"run {run_id}: nothing left to tear down\n")


# ---------------------------------------------------------------- AWS: kms-pubkey, sweep


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    with mock_aws():
        yield


def test_kms_pubkey_exports_the_key_evidence_verifies_with(
    aws_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drills.evidence.keys import load_public_key

    arn = boto3.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    out_path = tmp_path / "kms.pub"
    code, out, _ = run(capsys, "kms-pubkey", "--key-id", arn, "--out", str(out_path))
    assert code == 0
    keyid = load_public_key(out_path).keyid
    assert out == f"public key of {arn} written to {out_path}\nkeyid: {keyid}\n"
    code, _, err = run(capsys, "kms-pubkey", "--key-id", "alias/nope", "--out", str(tmp_path / "x.pub"))
    assert code in (2, 3) and not (tmp_path / "x.pub").exists()
    one_line_error(err, err.split(":")[0], "alias/nope")


def test_sweep_of_an_empty_account_and_home_reports_nothing(aws_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sweep", "--dry-run")
    report = json.loads(out)
    assert code == 0 and report["resources"] == [] and report["skipped"] == {}


def test_sweep_without_a_region_or_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = run(capsys, "sweep", "--scope", "aws")
    assert code == 2 and json.loads(out)["skipped"]["aws"].startswith("no AWS region")
    one_line_error(err, "InputError", "AWS not swept: no AWS region")
    code, out, err = run(capsys, "sweep", "--scope", "aws", "--region", "eu-west-1")
    assert code == 2 and "no AWS credentials" in err
    # --scope all: AWS skipped with its reason, the local sweep still runs and the command succeeds
    code, out, err = run(capsys, "sweep", "--region", "eu-west-1", "--dry-run")
    skipped = json.loads(out)["skipped"]
    assert code == 0 and skipped == {"aws": "no AWS credentials (configure AWS credentials, or sweep --scope local)"}


# ---------------------------------------------------------------- errors from below: one line, the right code


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (FileNotFoundError(2, "No such file or directory", "/x/y"), 2, "InputError: /x/y: no such file"),
        (PermissionError(13, "Permission denied", "/x/z"), 3, "InfrastructureError: /x/z: Permission denied"),
        (ValueError("a bug\nover two lines"), 3, "InternalError: ValueError: a bug over two lines (a bug in"),
        (KeyboardInterrupt(), 130, "Interrupted"),
    ],
)
def test_an_error_from_a_lower_layer_is_one_line_and_an_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: BaseException, code: int, line: str
) -> None:
    def schema(_a: Any) -> int:
        raise raised

    monkeypatch.setattr(cli, "cmd_schema", schema)
    got, out, err = run(capsys, "schema")
    assert (got, out) == (code, "")
    assert err.count("\n") == 1 and err.startswith(line) and "Traceback" not in err, err


def test_botocore_errors_are_ours_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.exceptions import EndpointConnectionError, NoRegionError

    for raised, code, kind in (
        (NoRegionError(), 2, "InputError: AWS: You must specify a region."),
        (EndpointConnectionError(endpoint_url="https://rds.x"), 3, "InfrastructureError: AWS: Could not connect"),
    ):

        def schema(_a: Any, exc: Exception = raised) -> int:
            raise exc

        monkeypatch.setattr(cli, "cmd_schema", schema)
        got, _, err = run(capsys, "schema")
        assert got == code and err.startswith(kind) and err.count("\n") == 1, err
