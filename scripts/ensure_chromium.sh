#!/usr/bin/env bash
# Make sure a Chromium is there for the dashboard's browser tests: Debian's chromium package,
# installed with apt-get when missing and this user may install packages. Where it cannot be
# installed, say why; those tests then skip with that reason.
set -uo pipefail
if [ -n "${WQ_CHROMIUM:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "no Chromium and no apt-get: the dashboard browser tests will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "no Chromium, and installing it needs root: the dashboard browser tests will be skipped" >&2
    exit 0
fi
echo "installing Debian's chromium for the dashboard browser tests..." >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 \
         && "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "installing chromium failed: the dashboard browser tests will be skipped" >&2
exit 0
