#!/usr/bin/env bash
# Installs what the admin page's test drives a real headless Chromium with: Debian's chromium (apt-get, when it is
# missing and this runs as root) and Playwright's Python client (from PyPI, into a venv under ~/.cache/torpor/ by
# scripts/setup-venv.sh; it drives the system's chromium, so no browser is downloaded). Prints the venv's python.
set -euo pipefail
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -q && apt-get install -y -q chromium; } >"${TMPDIR:-/tmp}/torpor-chromium.log" 2>&1 \
            || { echo "cannot install chromium: $(tail -n 1 "${TMPDIR:-/tmp}/torpor-chromium.log")" >&2; exit 1; }
    else
        echo "chromium is not installed (apt-get install chromium, as root)" >&2
        exit 1
    fi
fi
version=1.57.0
exec "$(dirname "$0")/setup-venv.sh" "playwright-$version" "playwright==$version" playwright.sync_api
