#!/usr/bin/env bash
# Runs on the GPU machine with .gpu-python/ carried (libtorpor from scripts/build-libtorpor.sh, xz'd, and the
# nvCOMP wheel): the Python package's loads and background saves (scripts/gpu/bench_python.py) on a 5.6 GB synthetic
# bf16 model, packed by torpor.save itself on the GPU. Results: $OUT/python.log, python.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
exec > >(tee "$OUT/python.log") 2>&1
[ -d /tmp/torpor-gpu/wheel ] || python3 -m zipfile -e .gpu-python/nvidia_libnvcomp_cu13-6.0.0.12-*.whl /tmp/torpor-gpu/wheel
xz -dc .gpu-python/libtorpor.so.xz > /tmp/torpor-gpu/libtorpor.so
export TORPOR_NVCOMP_PATH=/tmp/torpor-gpu/wheel/nvidia/libnvcomp/lib64
export TORPOR_LIBRARY=/tmp/torpor-gpu/libtorpor.so PYTHONPATH=$PWD/python
work=/tmp/torpor-python && rm -rf "$work" && mkdir -p "$work"
python3 scripts/gpu/make_llama_like.py "$work/model" --layers 8
python3 scripts/gpu/bench_python.py "$work/model" "$work/model.torpor" "$work" "$OUT/python.json"
echo "exit $?"
rm -rf "$work" /dev/shm/torpor-*.cache
