#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, types, then every test (real servers started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RESTORE_DRILLS_HOME="${RESTORE_DRILLS_HOME:-$(mktemp -d)}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
