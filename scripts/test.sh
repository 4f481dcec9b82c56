#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, types, then every test (real servers started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=1 bash scripts/setup.sh
export RESTORE_DRILLS_HOME="${RESTORE_DRILLS_HOME:-$(mktemp -d)}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Debian 12's own /usr/bin/python3 (3.11.2) is what a fresh machine has: when it is not the venv's
# interpreter, the drills that exercise version-sensitive standard library paths (tar extraction
# without filter=, which arrived in 3.11.4) run under it too.
if [ $# -eq 0 ] && [ -x /usr/bin/python3 ] && \
   [ "$(/usr/bin/python3 -c 'import sys; print(sys.version)')" != "$(.venv/bin/python -c 'import sys; print(sys.version)')" ]; then
  [ -x .venv-system/bin/python ] || /usr/bin/python3 -m venv .venv-system
  .venv-system/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING' || true
  echo "test: tar-format drills under $(/usr/bin/python3 --version) (/usr/bin/python3)" >&2
  .venv-system/bin/python -m pytest -q -p no:cacheprovider tests/functional/test_pg_corpus.py -k "tar_format or tar_base"
fi
# coverage per module, least covered first, the `drill` subprocesses included ([tool.coverage] in pyproject.toml)
exec .venv/bin/python -m pytest -q -p no:cacheprovider --cov --cov-report=term "$@"
