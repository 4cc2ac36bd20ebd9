#!/usr/bin/env bash
# Fetches nvCOMP 6 (the nvidia-libnvcomp-cu13 wheel from PyPI) into ~/.cache/torpor/ — never into the repository:
# its license allows shipping it only inside an application — and prints the folder holding libnvcomp.so.6.
# The tests use its entry points that need no GPU. On failure it prints the reason on the last line of stderr.
set -euo pipefail
version=6.0.0.12
cache=${TORPOR_CACHE:-$HOME/.cache/torpor}/nvcomp-$version
lib=$cache/wheel/nvidia/libnvcomp/lib64
if [ ! -f "$lib/libnvcomp.so.6" ]; then
    rm -rf "$cache" && mkdir -p "$cache"
    if ! pip download --no-deps -q "nvidia-libnvcomp-cu13==$version" -d "$cache" >"$cache/pip.log" 2>&1; then
        echo "cannot download nvidia-libnvcomp-cu13==$version: $(tail -n 1 "$cache/pip.log")" >&2
        exit 1
    fi
    python3 -m zipfile -e "$cache"/nvidia_libnvcomp_cu13-*.whl "$cache/wheel"
fi
echo "$lib"
