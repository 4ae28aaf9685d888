#!/usr/bin/env bash
# Run the test suite from a fresh clone: creates .venv if missing, installs the project with
# its test dependencies and (where it may) Debian's chromium for the browser tests, then runs
# pytest. Arguments go to pytest (e.g. -m slow, -k name).
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
scripts/ensure_chromium.sh
exec .venv/bin/python -m pytest "$@"
