#!/usr/bin/env bash
# Installs what building torpor needs and is missing: the development files of zstd, zlib and libdeflate (whose
# static archive torpor links for its CRC-32), on Debian/Ubuntu.
# Swift 6.1 or newer must already be on PATH. Safe to run again: it does nothing when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
apt_install setup libzstd-dev zlib1g-dev libdeflate-dev
command -v swift >/dev/null || { echo "setup: Swift 6.1+ is required (https://www.swift.org/install/)" >&2; exit 1; }
