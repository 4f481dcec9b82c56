"""What local-mariadb never does: remove a directory it did not lay out, whatever the journal says.
Also: the example runbooks parse. None of this needs a MariaDB server."""

from __future__ import annotations

from pathlib import Path

import pytest
from maria_helpers import step_ctx

from drills.backends.base import BackendSettings
from drills.clock import FakeClock
from drills.engines.mariadb.backend import create
from drills.engines.mariadb.teardown import OWNER_FILE, teardown_server
from drills.errors import TeardownError
from drills.resources import Resource
from drills.runbook import parse_runbook

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def _resource(root: Path, run_id: str = "r1") -> Resource:
    return Resource(
        kind="mariadb-server",
        id=str(root / "data"),
        backend="local-mariadb",
        attrs={"run_id": run_id, "run_dir": str(root), "datadir": str(root / "data")},
    )


@pytest.mark.parametrize("root", ["/", "/var/tmp", "/etc/mysql"])
def test_teardown_refuses_paths_it_did_not_lay_out(root: str) -> None:
    ctx, _ = step_ctx(FakeClock())
    with pytest.raises(TeardownError, match="refusing"):
        teardown_server(_resource(Path(root)), ctx)


def test_teardown_refuses_a_directory_owned_by_another_run(tmp_path: Path) -> None:
    root = tmp_path / "mariadb"
    (root / "data").mkdir(parents=True)
    (root / OWNER_FILE).write_text("someone-else\n")
    ctx, _ = step_ctx(FakeClock())
    with pytest.raises(TeardownError, match="owner file"):
        teardown_server(_resource(root), ctx)
    assert (root / "data").exists()


def test_teardown_of_what_is_already_gone_is_success(tmp_path: Path) -> None:
    ctx, _ = step_ctx(FakeClock())
    backend = create(None, BackendSettings(run_id="r1", run_dir=tmp_path, clock=FakeClock()))
    result = backend.teardown(_resource(tmp_path / "mariadb"), ctx)
    assert result.deleted and "no server running" in result.detail


def test_teardown_removes_a_directory_left_empty_by_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "mariadb"
    root.mkdir()  # the crash came between mkdir and the owner file
    ctx, _ = step_ctx(FakeClock())
    assert teardown_server(_resource(root), ctx).deleted
    assert not root.exists()


@pytest.mark.parametrize("name", ["mariadb-pitr.example.yaml", "mariadb-dump.example.yaml"])
def test_example_runbooks_parse(name: str) -> None:
    path = RUNBOOKS / name
    rb = parse_runbook(path.read_text(), str(path))
    assert rb.source.kind == name.removesuffix(".example.yaml")
