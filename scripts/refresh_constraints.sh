#!/usr/bin/env bash
# Rewrite constraints.txt: install the project with all its extras into a fresh virtual
# environment at the newest versions setup.cfg allows, and record exactly what was installed.
# Run the whole suite and the benchmarks afterwards, and commit constraints.txt with what
# they measured.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$tmp/venv/bin/pip" install --quiet -e ".[test,dev]"
{
    echo "# Exact versions the tests and benchmarks ran with; scripts/ensure_venv.sh installs"
    echo "# with them. Refresh: scripts/refresh_constraints.sh ($("$PYTHON" --version))."
    "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v '^replicated-work-queue'
} >constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages" >&2
