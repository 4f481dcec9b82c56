"""The Dockerfile, read as a reviewer would: no container engine runs here (CI builds and runs it).

What matters for the worker image: a pinned base (a rebuild never changes Python silently),
both database clients, the project installed, ``drill`` as the entry point, and never root.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comments dropped, as docker parses them."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


INSTR = instructions((ROOT / "Dockerfile").read_text())


def all_of(word: str) -> list[str]:
    return [args for w, args in INSTR if w == word]


def test_the_base_is_a_pinned_slim_python_3_11() -> None:
    (base,) = all_of("FROM")
    image, _, tag = base.partition(":")
    assert image == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", tag), tag


def test_both_database_clients_are_installed_without_recommends() -> None:
    apt = " ".join(a for a in all_of("RUN") if "apt-get install" in a)
    assert "postgresql-client" in apt.split() and "mariadb-client" in apt.split()
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists" in " ".join(all_of("RUN"))


def test_the_project_is_installed_with_pip_from_the_build_context() -> None:
    runs = all_of("RUN")
    assert any(re.search(r"pip install (--no-cache-dir )?\.(\s|$)", r) for r in runs), runs
    copied = " ".join(all_of("COPY"))
    for needed in ("pyproject.toml", "README.md", "drills", "validators"):  # what setuptools reads
        assert needed in copied, needed


def test_it_runs_as_a_non_root_user_and_drill_is_the_entry_point() -> None:
    users = all_of("USER")
    assert users and users[-1] not in {"root", "0", "0:0"}
    last_user = max(i for i, (w, _) in enumerate(INSTR) if w == "USER")
    assert all(w != "RUN" for w, _ in INSTR[last_user:]), "nothing runs as root after USER"
    (entry,) = all_of("ENTRYPOINT")
    assert json.loads(entry) == ["drill"]  # exec form: SIGTERM reaches drill, not a shell


def test_the_build_context_leaves_out_keys_tests_and_the_venv() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "*.key"} <= ignored
    assert not ({"drills", "validators", "pyproject.toml", "README.md"} & ignored)


def test_ci_builds_and_smoke_tests_the_image() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = " ".join(str(s.get("run", "")) for job in ci["jobs"].values() for s in job["steps"])
    assert re.search(r"docker build\b.* -t (\S+) \.", steps)
    for cmd in ("--help", "doctor --help", "sfn-worker --help"):
        assert f"docker run --rm restore-drills:ci {cmd}" in steps, cmd
