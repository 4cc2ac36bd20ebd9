#!/usr/bin/env bash
# Runs on the GPU machine (after scripts/gpu/prepare.sh and scripts/gpu/prepare-s3.sh here, carried as ".gpu"):
# the load half of the object-storage benchmark. moto's S3 server on loopback serves a synthetic Llama-shaped bf16
# model (small width, 32 layers, 100 MB shards) and its `pack --gpu`; scripts/bench_s3.py --gpu times plain
# downloads, pulls, and GPU loads streamed from the store, pulled first, and from local files, then checks that a
# streamed load is byte-exact and that a bit flipped in the store fails it. Results: $OUT/s3-load.json and .log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
exec > >(tee "$OUT/s3-load.log") 2>&1
source scripts/gpu/unpack.sh
[ -d /tmp/torpor-gpu/moto-site ] || tar -xJf .gpu/moto-site.tar.xz -C /tmp/torpor-gpu
printf '#!/bin/sh\nPYTHONPATH=/tmp/torpor-gpu/moto-site exec python3 "$@"\n' > /tmp/torpor-gpu/moto-python
chmod +x /tmp/torpor-gpu/moto-python
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nproc; free -g | head -2
} 2>&1
work=${TORPOR_BENCH_DIR:-/tmp/torpor-s3-bench}
rm -rf "$work" && mkdir -p "$work"
python3 scripts/gpu/make_llama_like.py "$work/model" --small --layers 32 --shard-gb 0.1
du -sh "$work/model"
PYTHONUNBUFFERED=1 python3 scripts/bench_s3.py "$torpor" /tmp/torpor-gpu/moto-python "$work/model" \
    "$OUT/s3-load.json" --gpu "$@"
