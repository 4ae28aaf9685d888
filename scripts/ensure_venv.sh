#!/usr/bin/env bash
# Create .venv if missing and install the project into it (editable), with the extras named in
# $1 (e.g. "test" or "test,dev"), at the exact versions in constraints.txt. Reinstalls only
# when the build files, the constraints or the C kernel changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    echo "creating .venv..." >&2
    "$PYTHON" -m venv .venv
fi
kind=${extras:-base}
stamp=.venv/.installed-$kind-$(cat setup.cfg setup.py pyproject.toml constraints.txt worker/_sha512.c |
    sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
    echo "installing the project into .venv ($kind)..." >&2
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -c constraints.txt -e ".${extras:+[$extras]}"
    rm -f .venv/.installed-"$kind"-*
    touch "$stamp"
fi
