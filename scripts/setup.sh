#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for restore-drills: server binaries the drills
# and tests start (PostgreSQL, MariaDB) through apt-get where absent, then the project
# and its development tools into ./.venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

need=()
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)
fi
# kind: pgbackrest / kind: barman drill these tools' repositories (and their tests build real ones)
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
command -v barman >/dev/null 2>&1 || need+=(barman)
if [ "${WITH_MARIADB:-1}" = 1 ]; then
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  command -v mariadb-backup >/dev/null 2>&1 || need+=(mariadb-backup)
  command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
fi
# the tests open evidence-pack reports in a real headless browser (scripts/test.sh sets WITH_BROWSER=1)
if [ "${WITH_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-liberation)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} with apt-get" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -c 'import sys; assert sys.version_info >= (3, 11), "restore-drills needs Python 3.11 or newer"'
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: ready (.venv/bin/drill)" >&2
