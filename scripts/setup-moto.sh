#!/usr/bin/env bash
# Installs moto's S3 server (moto[server], from PyPI) into a venv under ~/.cache/torpor/ — never into the
# repository — and prints the venv's python. The storage tests start `python -m moto.server` on loopback as a
# real S3-protocol server. On failure it prints the reason on the last line of stderr.
set -euo pipefail
version=5.2.5
venv=${TORPOR_CACHE:-$HOME/.cache/torpor}/moto-$version
if ! "$venv/bin/python" -c "import moto.server, boto3" 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >"$venv.log" 2>&1 ||
        ! "$venv/bin/pip" install -q "moto[server]==$version" >>"$venv.log" 2>&1; then
        echo "cannot install moto[server]==$version: $(tail -n 1 "$venv.log")" >&2
        exit 1
    fi
fi
echo "$venv/bin/python"
