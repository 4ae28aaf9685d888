#!/usr/bin/env bash
# Run the test suite from a fresh clone: creates .venv if missing, installs the project with
# its test dependencies, then runs pytest. Arguments go to pytest (e.g. -m slow, -k name).
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
exec .venv/bin/python -m pytest "$@"
