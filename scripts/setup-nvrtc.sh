#!/usr/bin/env bash
# Fetches NVRTC (the nvidia-cuda-nvrtc wheel from PyPI) into ~/.cache/torpor/ — never into the repository — and
# prints the folder holding libnvrtc.so.13. The tests compile Torpor's byte-plane kernel with it (NVRTC needs no
# GPU). On failure it prints the reason on the last line of stderr.
set -euo pipefail
version=13.0.88
cache=${TORPOR_CACHE:-$HOME/.cache/torpor}/nvrtc-$version
lib=$cache/wheel/nvidia/cu13/lib
if [ ! -f "$lib/libnvrtc.so.13" ]; then
    rm -rf "$cache" && mkdir -p "$cache"
    if ! pip download --no-deps -q "nvidia-cuda-nvrtc==$version" -d "$cache" >"$cache/pip.log" 2>&1; then
        echo "cannot download nvidia-cuda-nvrtc==$version: $(tail -n 1 "$cache/pip.log")" >&2
        exit 1
    fi
    python3 -m zipfile -e "$cache"/nvidia_cuda_nvrtc-*.whl "$cache/wheel"
fi
echo "$lib"
