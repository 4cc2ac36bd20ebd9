#!/usr/bin/env bash
# Installs ZipNN (PyPI `zipnn`), the peer `torpor bench pack` measures beside torpor, into a venv under
# ~/.cache/torpor/ and prints the venv's python (scripts/setup-venv.sh). ZipNN imports torch: the CPU-only wheel is
# tried first (found where pip is configured with a local wheel folder), then whatever torch PyPI offers.
set -euo pipefail
version=0.5.4
here=$(dirname "$0")
"$here/setup-venv.sh" "zipnn-$version" "zipnn==$version torch==2.13.0+cpu" zipnn 2>/dev/null ||
    exec "$here/setup-venv.sh" "zipnn-$version" "zipnn==$version" zipnn
