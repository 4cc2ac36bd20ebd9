#!/usr/bin/env bash
# Installs kubernetes-validate (from PyPI; it carries the Kubernetes schemas, so validating needs no cluster and no
# network) into a venv under ~/.cache/torpor/ — never into the repository — and prints the venv's python. The
# deployment tests validate deploy/kubernetes/ with it. On failure it prints the reason on the last line of stderr.
set -euo pipefail
version=1.37.0
venv=${TORPOR_CACHE:-$HOME/.cache/torpor}/kubernetes-validate-$version
if ! "$venv/bin/python" -c "import kubernetes_validate" 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >"$venv.log" 2>&1 ||
        ! "$venv/bin/pip" install -q "kubernetes-validate==$version" >>"$venv.log" 2>&1; then
        echo "cannot install kubernetes-validate==$version: $(tail -n 1 "$venv.log")" >&2
        exit 1
    fi
fi
echo "$venv/bin/python"
