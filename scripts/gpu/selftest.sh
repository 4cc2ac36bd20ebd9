#!/usr/bin/env bash
# Runs on the GPU machine (after scripts/gpu/prepare.sh here): finds the driver and nvCOMP, round-trips synthetic
# bf16 weights through nvCOMP ANS against a pinned copy of the same bytes, and runs a small round trip under
# compute-sanitizer memcheck. Results go to $OUT (the device tool brings them back).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT" /tmp/torpor-gpu
source scripts/gpu/unpack.sh
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
    $torpor gpu info
} 2>&1 | tee "$OUT/gpu-info.txt"
for size in 1024 4096; do
    $torpor gpu selftest --megabytes "$size" --zstd --json > "$OUT/selftest-bf16-${size}MiB.json"
    cat "$OUT/selftest-bf16-${size}MiB.json"
done
$torpor gpu selftest --megabytes 256 --chunk-size 65536 --json > "$OUT/selftest-bf16-64KiB-chunks.json"
cat "$OUT/selftest-bf16-64KiB-chunks.json"
compute-sanitizer --tool memcheck --error-exitcode 9 $torpor gpu selftest --megabytes 16 > "$OUT/memcheck.txt" 2>&1 \
    && echo "memcheck: clean" || echo "memcheck: FAILED (status $?)"
tail -n 5 "$OUT/memcheck.txt"
