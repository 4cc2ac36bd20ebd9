#!/usr/bin/env bash
# Runs on the GPU machine: nvCOMP LZ4 against ANS and no codec on bf16 weights (scripts/gpu/lz4_check.py). Carries
# the nvCOMP wheels that scripts/gpu/prepare.sh put in .gpu/ (the library, and nvCOMP's Python API for this check);
# PyTorch is the machine's. Results: $OUT/lz4-check.json and lz4-check.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
exec > >(tee "$OUT/lz4-check.log") 2>&1
source scripts/gpu/unpack.sh
# nvCOMP's Python API beside the library it loads (both wheels unpacked into one tree).
if [ ! -d /tmp/torpor-gpu/wheel/nvidia/nvcomp ]; then
    ls .gpu/nvidia_nvcomp_cu13-6.0.0.12-*.whl >/dev/null 2>&1 || { echo "lz4-check: carry .gpu/nvidia_nvcomp_cu13-*.whl"; exit 3; }
    python3 -m zipfile -e .gpu/nvidia_nvcomp_cu13-6.0.0.12-*.whl /tmp/torpor-gpu/wheel
fi
PYTHONPATH=/tmp/torpor-gpu/wheel${PYTHONPATH:+:$PYTHONPATH} timeout "${LZ4_TIMEOUT:-240}" \
    python3 scripts/gpu/lz4_check.py --out "$OUT/lz4-check.json" ${LZ4_FILE:+--file "$LZ4_FILE"}
