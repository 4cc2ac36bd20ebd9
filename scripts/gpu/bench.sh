#!/usr/bin/env bash
# Runs on the GPU machine (after scripts/gpu/prepare.sh here, carried as ".gpu"): the whole issue-5 comparison in
# one run on one card — synthetic Llama-3.1-8B-shaped bf16 weights generated here, `torpor pack --gpu` against
# plain I/O, loads (a)-(e), size ratios of every GPU codec, bad input, and compute-sanitizer memcheck.
# Results go to $OUT: gpu-info.txt, load-bench.json, bench.log. TORPOR_BENCH_SMALL_ONLY=1 stops before the 16 GB
# comparison (codecs, bad input and memcheck only).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
exec > >(tee "$OUT/bench.log") 2>&1
source scripts/gpu/unpack.sh
# NVRTC (for byteplane packs) comes with PyTorch's CUDA wheels; where Torpor's search misses it, point at it.
if ! $torpor gpu info 2>/dev/null | grep -q "^NVRTC [0-9]"; then
    found=$(find / -name 'libnvrtc.so.1[23]' -not -path '*/proc/*' 2>/dev/null | head -n 1)
    [ -n "$found" ] && export TORPOR_NVRTC_PATH=$found
fi
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv
    $torpor gpu info
    nproc; free -g | head -2; df -h "$PWD" /tmp /dev/shm | cat
} 2>&1 | tee "$OUT/gpu-info.txt"
work=${TORPOR_BENCH_DIR:-$PWD/.bench}
rm -rf "$work" && mkdir -p "$work"

echo "== small models: every GPU codec, sizes and bit-exact loads"
python3 scripts/gpu/make_llama_like.py "$work/small-bf16" --small --layers 4
python3 scripts/gpu/make_llama_like.py "$work/small-f32" --small --layers 2 --dtype f32
for model in small-bf16 small-f32; do
    src=$(du -cb "$work/$model"/*.safetensors | tail -1 | cut -f1)
    for codec in auto ans16 ans32 ans8 bitcomp byteplane zstd; do
        gpu=--gpu; case $codec in byteplane|zstd) gpu=;; esac
        $torpor pack -q $gpu --codec "$codec" "$work/$model" "$work/$model-$codec" || { echo "pack $model $codec failed"; continue; }
        size=$(du -cb "$work/$model-$codec"/*.torpor | tail -1 | cut -f1)
        printf '%-11s %-10s ratio %s  ' "$model" "$codec" "$(python3 -c "print(f'{$size / $src:.4f}')")"
        $torpor load "$work/$model-$codec" --verify-against "$work/$model" 2>&1 | tail -1
    done
done

echo "== bad input"
bad=$work/bad && cp -r "$work/small-bf16-auto" "$bad"
file=$(ls "$bad"/*.torpor | head -1)
python3 - "$file" <<'PY'
import sys
path = sys.argv[1]
with open(path, "r+b") as handle:
    handle.seek(4096 + 1000)   # inside the first chunk
    byte = handle.read(1)
    handle.seek(4096 + 1000)
    handle.write(bytes([byte[0] ^ 0x40]))
PY
$torpor load "$bad"; echo "corrupted chunk: exit $?"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$bad" 2>&1 | tail -2
echo "memcheck, corrupted ANS chunk: exit ${PIPESTATUS[0]} (1 = the load's error, 9 = a memory error)"
cp -r "$work/small-bf16-zstd" "$work/bad-zstd"
python3 - "$(ls "$work/bad-zstd"/*.torpor | head -1)" <<'PY'
import sys
with open(sys.argv[1], "r+b") as handle:
    handle.seek(4096 + 200)
    byte = handle.read(1)
    handle.seek(4096 + 200)
    handle.write(bytes([byte[0] ^ 0x01]))
PY
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/bad-zstd" 2>&1 | tail -2
echo "memcheck, corrupted zstd chunk: exit ${PIPESTATUS[0]}"
cp -r "$work/small-bf16-byteplane" "$work/bad-byteplane"
python3 - "$(ls "$work/bad-byteplane"/*.torpor | head -1)" <<'PY'
import sys
with open(sys.argv[1], "r+b") as handle:
    handle.seek(4096 + 300)
    byte = handle.read(1)
    handle.seek(4096 + 300)
    handle.write(bytes([byte[0] ^ 0x10]))
PY
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/bad-byteplane" 2>&1 | tail -2
echo "memcheck, corrupted byteplane chunk: exit ${PIPESTATUS[0]}"
cp -r "$work/small-bf16-auto" "$work/truncated"; f=$(ls "$work/truncated"/*.torpor | head -1); truncate -s 100000 "$f"
$torpor load "$work/truncated"; echo "truncated container: exit $?"
$torpor load "$work/small-bf16-auto" --device 7; echo "wrong device: exit $?"
TORPOR_NVCOMP_PATH=/nonexistent $torpor load "$work/small-bf16-auto"; echo "missing nvCOMP: exit $?"
$torpor load "$work/small-bf16-byteplane"; echo "byteplane pack through the NVRTC kernel: exit $?"

echo "== memcheck"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/small-bf16-auto" --verify-against "$work/small-bf16" 2>&1 | tail -3
echo "memcheck load: exit ${PIPESTATUS[0]}"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/small-bf16-auto" --source host-cache --cache-dir "$work" 2>&1 | tail -3
echo "memcheck host-cache load: exit ${PIPESTATUS[0]}"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor pack -q --gpu "$work/small-f32" "$work/memcheck-pack" 2>&1 | tail -3
echo "memcheck pack --gpu: exit ${PIPESTATUS[0]}"
for model in small-bf16 small-f32; do
    compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/$model-byteplane" --verify-against "$work/$model" 2>&1 | tail -2
    echo "memcheck byteplane load of $model: exit ${PIPESTATUS[0]}"
done
rm -rf "$work"/small-* "$work"/bad* "$work/truncated" "$work/memcheck-pack"

if [ -n "${TORPOR_BENCH_SMALL_ONLY:-}" ]; then rm -rf "$work" /dev/shm/torpor-*.cache; exit 0; fi
echo "== the comparison: Llama-3.1-8B shapes"
python3 scripts/gpu/make_llama_like.py "$work/llama"
python3 scripts/gpu/bench_load.py $torpor "$work/llama" "$work/llama-pack" "$OUT"

echo "== out of GPU memory"
python3 - "$torpor" "$work/llama-pack" <<'PY'
import subprocess, sys, torch
free, _ = torch.cuda.mem_get_info()
hog = torch.empty(free - (2 << 30), dtype=torch.uint8, device="cuda")
result = subprocess.run([sys.argv[1], "load", sys.argv[2]], capture_output=True, text=True)
print(f"load with 2 GiB free: exit {result.returncode}: {result.stderr.strip()[-300:]}")
PY
rm -rf "$work" /dev/shm/torpor-*.cache
