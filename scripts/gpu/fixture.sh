#!/usr/bin/env bash
# Runs on the GPU machine after scripts/gpu/bench.sh in the same session (its binary and nvCOMP are still there),
# with the MiniLM fixture carried in .gpu-fixture/ (xz'd, or as is) (a separate call: the binary, nvCOMP and the fixture together
# exceed what one call carries): its size with ANS against the CPU codecs, and a bit-exact load.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
exec > >(tee "$OUT/fixture.log") 2>&1
source scripts/gpu/unpack.sh
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
# ANS options (sub-chunks per chunk, states per lane; 0 = nvCOMP's default) and chunk sizes: the container's size
# against the fixture, and ANS decode speed on the GPU (1 GiB of synthetic bf16, device-resident; the loader needs
# only what the host-to-device link delivers, about 55 GB/s of compressed bytes).
echo "chunk     sub-chunks states  ratio   decode GB/s (1 GiB synthetic)"
for setting in "1048576 0 0" "1048576 0 1" "1048576 4 2" "1048576 4 1" "1048576 8 1" "1048576 16 1" \
    "4194304 0 0" "4194304 4 1" "16777216 4 1" "262144 4 1"; do
    read -r chunk subchunks states <<< "$setting"
    name=$work/ans16-$chunk-$subchunks-$states
    $torpor pack -q --gpu --codec ans16 --chunk-size $chunk --ans-sub-chunks $subchunks --ans-states $states \
        "$fixture" "$name" || { echo "pack $setting failed"; continue; }
    size=$(stat -c %s "$name"/*.torpor)
    verified=$($torpor load "$name" --verify-against "$fixture" 2>&1 | tail -1)
    decode=$($torpor gpu selftest --megabytes 1024 --chunk-size $chunk --ans-sub-chunks $subchunks \
        --ans-states $states --json | python3 -c "import json,sys; r=json.load(sys.stdin)['ans']; print(f\"{r['decodeGBps']:.0f} (ratio {r['ratio']:.4f}, bit-exact {r['bitExact']})\")")
    printf '%-9s %-10s %-6s %s  %s\n' $chunk $subchunks $states "$(python3 -c "print(f'{$size / $src:.4f}')")" "$decode"
    echo "          load: $verified"
done
$torpor load "$work/auto" --source host-cache --repeat 3 --verify-against "$fixture"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor load "$work/auto" --verify-against "$fixture" 2>&1 | tail -2
echo "memcheck fixture load: exit ${PIPESTATUS[0]}"
rm -rf "$work" /dev/shm/torpor-*.cache
