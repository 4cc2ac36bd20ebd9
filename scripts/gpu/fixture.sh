#!/usr/bin/env bash
# Runs on the GPU machine after scripts/gpu/bench.sh in the same session (its binary and nvCOMP are still there),
# with the MiniLM fixture carried in .gpu-fixture/ (xz'd, or as is) (a separate call: the binary, nvCOMP and the fixture together
# exceed what one call carries): its size with ANS against the CPU codecs, and a bit-exact load.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
exec > >(tee "$OUT/fixture.log") 2>&1
[ -x /tmp/torpor-gpu/torpor ] || { xz -dc .gpu/torpor.xz > /tmp/torpor-gpu/torpor && chmod +x /tmp/torpor-gpu/torpor; }
[ -d /tmp/torpor-gpu/wheel ] || python3 -m zipfile -e .gpu/nvidia_libnvcomp_cu13-6.0.0.12-*.whl /tmp/torpor-gpu/wheel
export TORPOR_NVCOMP_PATH=/tmp/torpor-gpu/wheel/nvidia/libnvcomp/lib64
torpor=/tmp/torpor-gpu/torpor
work=/tmp/torpor-fixture && rm -rf "$work" && mkdir -p "$work"
fixture=$work/minilm-l6-bf16.safetensors
if [ -f .gpu-fixture/minilm-l6-bf16.safetensors.xz ]; then
    xz -dc .gpu-fixture/minilm-l6-bf16.safetensors.xz > "$fixture"
else
    cp .gpu-fixture/minilm-l6-bf16.safetensors "$fixture"
fi
src=$(stat -c %s "$fixture")
for codec in auto ans16 bitcomp ans8 byteplane zstd; do
    rm -rf "$work/$codec"
    gpu=--gpu; case $codec in byteplane|zstd) gpu=;; esac
    $torpor pack -q $gpu --codec "$codec" "$fixture" "$work/$codec" || { echo "pack $codec failed"; continue; }
    size=$(stat -c %s "$work/$codec"/*.torpor)
    printf 'minilm %-10s %s bytes, ratio %s  ' "$codec" "$size" "$(python3 -c "print(f'{$size / $src:.4f}')")"
    $torpor load "$work/$codec" --verify-against "$fixture" 2>&1 | tail -1
done
for chunk in 65536 262144 4194304 16777216; do
    $torpor pack -q --gpu --chunk-size $chunk "$fixture" "$work/ans16-$chunk"
    size=$(stat -c %s "$work/ans16-$chunk"/*.torpor)
    printf 'minilm ans16, %8d-byte chunks: ratio %s\n' $chunk "$(python3 -c "print(f'{$size / $src:.4f}')")"
done
$torpor load "$work/auto" --source host-cache --repeat 3 --verify-against "$fixture"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/auto" --verify-against "$fixture" 2>&1 | tail -2
echo "memcheck fixture load: exit ${PIPESTATUS[0]}"
rm -rf "$work" /dev/shm/torpor-*.cache
