#!/usr/bin/env bash
# Lint, formatting, types and layering, as CI checks them before the tests. Sets up .venv
# like run_tests.sh. Fix formatting with `.venv/bin/ruff format .`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m tests.layering
