#!/usr/bin/env bash
# Installs what building torpor needs and is missing: the zstd and zlib development headers (Debian/Ubuntu).
# Swift 6.1 or newer must already be on PATH. Safe to run again: it does nothing when all is present.
set -euo pipefail

missing=()
for package in libzstd-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: Swift 6.1+ is required (https://www.swift.org/install/)" >&2; exit 1; }
