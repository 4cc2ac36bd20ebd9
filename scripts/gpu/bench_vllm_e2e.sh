#!/usr/bin/env bash
# Runs on the GPU machine: the L2-wake-and-load benchmark through real vLLM 0.25.1 (scripts/gpu/bench_vllm_e2e.py).
# Four device calls in a row while the machine is warm, each carrying at most 64 MiB: .vk1; .vk2; .vk3 with
# .gpu/nvidia_libnvcomp_cu13-*.whl (scripts/gpu/vllm-kit.sh, prepare.sh); then .gpu/torpor.xz, .gpu/libtorpor.so.xz
# and .gpu/tokenizer with this script. The first three calls run `bash scripts/gpu/bench_vllm_e2e.sh` too: it stores
# their pieces and stops (exit 3) until all are there. SIZES (default 1b,8b) and CODECS choose the rows; UTILIZATION each engine's --gpu-memory-utilization (0.28). Results: $OUT/vllm-e2e.json (the rows),
# vllm-e2e.log, engine-logs.tar.xz.
set -uo pipefail
cd "$(dirname "$0")/../.."
LOG_NAME=vllm-e2e source scripts/gpu/vllm-env.sh
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
free -g | head -2; df -h /tmp | tail -1
logs=/tmp/torpor-e2e-logs && rm -rf "$logs" && mkdir -p "$logs"
python3 scripts/gpu/bench_vllm_e2e.py --torpor "$torpor" --tokenizer .gpu/tokenizer --logs "$logs" \
    --out "$OUT/vllm-e2e.json" --sizes "${SIZES:-1b,8b}" --codecs "${CODECS:-ans16,byteplane,zstd,raw}" \
    ${REPEAT:+--repeat "$REPEAT"} ${UTILIZATION:+--utilization "$UTILIZATION"}
status=$?
tar -C "$logs" -cJf "$OUT/engine-logs.tar.xz" .
echo "exit $status"
exit $status
